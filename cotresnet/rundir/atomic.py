"""Crash-safe file writes and safe loads (no Lightning import: cheap for any process)."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where Linux exposes it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, rename: a reader (or a crash) sees
    the old complete file or the new complete file, never a torn one. The file gets the permissions
    an ordinary open() would give (0666 less the umask), not mkstemp's owner-only 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_trusted(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, no code execution. `mmap`: the
    tensors' storage stays in the file until used (reading a large checkpoint's small entries is cheap)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        reason = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ValueError(f"{path} does not load safely (torch.load, weights_only=True): "
                         f"{reason[:240]}{'...' if len(reason) > 240 else ''}") from e
