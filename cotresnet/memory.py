"""What a backward pass keeps alive: the bytes of the distinct tensors autograd saves."""
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
