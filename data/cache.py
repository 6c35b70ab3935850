"""Decode once, resize once: the uint8 image store and its on-disk cache.

A store holds every eraser of one source as ``(N, 6, H, W)`` uint8 at the delivered size,
plus one resized copy per requested input size. With a cache folder both live in ``.npy``
files that are memory-mapped, so a second run on the same data skips decoding entirely and a
study process keeps only the rows and size it trains on in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from data.errors import Problem, error
from data.sources import ImageError, ImageSource
from model.channels import CHANNELS
from model.fileio import atomic_write
from model.preprocess import resize_uint8

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: the exact integer-weight resize (model.preprocess.resize)
RESIZE_CHUNK = 64
Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``$ERASER_CACHE_DIR``, else ``$XDG_CACHE_HOME/eraser-search``, else ``~/.cache/...``."""
    if os.environ.get("ERASER_CACHE_DIR"):
        return Path(os.environ["ERASER_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "eraser-search"


class ImageStore:
    """Every decoded eraser of one source, addressed by row; see :func:`build_store`."""

    def __init__(self, ids: list[str], digests: list[str], native: np.ndarray,
                 folder: Path | None):
        self.ids = ids
        self.digests = digests
        self.native = native  # (N, 6, H, W) uint8; a read-only memmap when cached on disk
        self.folder = folder
        self._row = {k: i for i, k in enumerate(ids)}

    @property
    def size(self) -> int:
        return int(self.native.shape[-1])

    def rows(self, ids: list[str]) -> np.ndarray:
        return np.array([self._row[k] for k in ids], dtype=np.int64)

    def at_size(self, size: int, rows: np.ndarray) -> np.ndarray:
        """The given rows at ``size`` x ``size``, as an in-memory ``(n, 6, S, S)`` uint8 array."""
        if size == self.size:
            return np.ascontiguousarray(self.native[rows])
        if self.folder is None:
            return _resize_all(self.native[rows], size)
        path = self.folder / f"size_{size}.npy"
        if not path.exists():
            log.info("resizing %d erasers to %dx%d (once; cached in %s)",
                     len(self.ids), size, size, self.folder)
            _atomic_save(path, _resize_all(self.native, size))
        resized = np.load(path, mmap_mode="r")
        return np.ascontiguousarray(resized[rows])


def _resize_all(native: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((native.shape[0], native.shape[1], size, size), dtype=np.uint8)
    for start in range(0, native.shape[0], RESIZE_CHUNK):
        chunk = np.array(native[start:start + RESIZE_CHUNK])  # a writable copy, not a view
        out[start:start + RESIZE_CHUNK] = resize_uint8(torch.from_numpy(chunk), size).numpy()
    return out


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:  # a file object: np.save would rename a bare path
        np.save(f, array)


def cache_key(source: ImageSource, ids: list[str]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}\0{source.fingerprint()}\0".encode())
    h.update("\0".join(ids).encode())
    return h.hexdigest()[:24]


# About 100 lines: reuse a complete cache, else decode every eraser in threads into a
# memory map and publish it atomically; the steps share the cache folder's state.
def build_store(source: ImageSource, ids: list[str], *, cache_dir: Path | None,
                workers: int | None = None,
                progress: Progress | None = None) -> tuple[ImageStore | None, list[Problem]]:
    """Decode ``ids`` from ``source`` (or reuse the cache), checking every image in one pass.

    Returns ``(None, problems)`` when any image is unusable: nothing is cached then.
    """
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / cache_key(source, ids)
        meta_path = folder / "meta.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                native = np.load(folder / "native.npy", mmap_mode="r")
                if meta["ids"] == ids and native.shape[0] == len(ids):
                    log.info("reusing decoded images from %s", folder)
                    if progress:
                        progress(len(ids), len(ids))
                    return ImageStore(ids, meta["digests"], native, folder), []
            except (OSError, ValueError, KeyError):
                log.warning("rebuilding an unreadable cache in %s", folder)
                shutil.rmtree(folder, ignore_errors=True)

    problems: list[Problem] = []
    if not ids:
        return None, [error("no-images", source.describe(), "holds no usable erasers.")]

    # The first readable eraser fixes the size every other one must have.
    first_arr, first = None, 0
    while first < len(ids):
        try:
            first_arr = source.read(ids[first])
            break
        except ImageError as exc:
            problems.append(error(exc.kind, source.where(ids[first]), str(exc)))
            first += 1
    if first_arr is None:
        return None, problems
    size = first_arr.shape[0]

    tmpdir = None
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
        native = np.lib.format.open_memmap(tmpdir / "native.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(ids), len(CHANNELS), size, size))
    else:
        native = np.empty((len(ids), len(CHANNELS), size, size), dtype=np.uint8)
    digests = [""] * len(ids)

    def decode(i: int) -> Problem | None:
        try:
            arr = first_arr if i == first else source.read(ids[i])
        except ImageError as exc:
            return error(exc.kind, source.where(ids[i]), str(exc))
        if arr.shape[0] != size:
            return error("size", source.where(ids[i]), f"is {arr.shape[0]}x{arr.shape[1]} while "
                         f"the other erasers are {size}x{size}; all erasers must share one size.")
        chw = arr.transpose(2, 0, 1)
        native[i] = chw
        digests[i] = hashlib.blake2b(np.ascontiguousarray(chw).tobytes(),
                                     digest_size=16).hexdigest()
        return None

    n_workers = workers or min(8, 2 * (os.cpu_count() or 1))
    done = first
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            for p in pool.map(decode, range(first, len(ids))):
                done += 1
                if p is not None:
                    problems.append(p)
                if progress and (done % 16 == 0 or done == len(ids)):
                    progress(done, len(ids))
        if problems:
            return None, problems
        if folder is None:
            return ImageStore(ids, digests, native, None), []
        native.flush()
        (tmpdir / "meta.json").write_text(json.dumps({
            "version": CACHE_VERSION, "source": source.describe(), "ids": ids,
            "digests": digests, "size": size}))
        if folder.exists() and not (folder / "meta.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # left over from an interrupted build
        try:
            os.replace(tmpdir, folder)
        except OSError:
            # another process finished the same cache first: use theirs
            shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir = None
        return ImageStore(ids, digests, np.load(folder / "native.npy", mmap_mode="r"),
                          folder), []
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
