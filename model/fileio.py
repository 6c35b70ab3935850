"""Atomic file writes: a reader (or a user after Ctrl-C) never sees half a file.

Every output the product hands to users (model files, CSVs, reports, caches) is written to a
temporary file in the target's folder and renamed into place, so the target either keeps its
old content or gets the complete new one. The temporary file is removed on any failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp makes 0o600,
    which would hide a model file from the rest of a team)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    For libraries that write by file name (``onnx.save_model``, ``np.savez``). ``fsync``
    flushes the data to disk before the rename (for files worth a crash: model checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False,
                 **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only when the block completes.

    ``mode`` is ``"w"`` or ``"wb"``; ``open_kwargs`` go to :func:`open` (``newline``,
    ``encoding``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


__all__ = ("atomic_path", "atomic_write", "write_text")
