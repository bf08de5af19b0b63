"""Memory: the bytes of the distinct tensors a backward pass keeps alive, and glibc's handling of the
large blocks a training step frees."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


def saved_tensor_bytes(fn: Callable[[], Tensor], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while `fn()` builds its graph, less those of
    `exclude` (the parameters, which live anyway). A storage saved by several ops counts once."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the heap (no mmap for large blocks, no trimming): a training
    step allocates and frees the same large temporaries (N x M per layer) every step, and returning them
    to the kernel makes every step pay page faults to get them back zeroed (measured at (N, d, L, M) =
    (256, 16, 64, 16384): 1.73 s per fused step instead of 1.38 s). The process then keeps its peak
    memory, which every step needs anyway. Returns False where this is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
