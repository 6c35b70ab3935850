"""Where the images come from: ``.npy`` files, ``arrays.zip``, PNG files or ``images.zip``.

Every source lists its eraser ids up front (cheap: names only) and decodes one eraser at a
time into an ``(H, W, 6)`` uint8 array. Decoding problems raise :class:`ImageError` with a
message that names the file and says what to do; listing problems (a zip member escaping its
folder, a PNG set missing a channel) are collected in ``source.problems``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import posixpath
import threading
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.errors import DataError, Problem, error, warning
from model.channels import CHANNELS

NPY_DIRS = ("", "arrays")
PNG_DIRS = ("", "images")
IMAGE_EXTENSIONS = {".npy", ".png", ".tif", ".tiff", ".bmp", ".jpg"}
NPY_MAGIC = b"\x93NUMPY"
# Members of a zip are read whole into memory (several at once, one per decoding thread): a
# member declaring more than any eraser needs is refused before it is read. 310x310x6 bytes
# is 0.58 MB; these limits leave room for erasers up to about 2300 px a side.
MAX_NPY_MEMBER = 32 * 2**20
MAX_PNG_MEMBER = 16 * 2**20
MAX_PNG_PIXELS = 2400 * 2400  # one channel; PIL's own bomb limit is ~178 M pixels


class ImageError(Exception):
    """One eraser could not be decoded; the message is user-facing."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def strip_extension(name: str) -> str:
    """``E00042.npy`` -> ``E00042``; ids in CSVs may or may not carry an extension."""
    name = name.strip()
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def check_array(arr: np.ndarray, where: str) -> np.ndarray:
    """Validate a decoded eraser: ``(H, W, 6)``, square, ``uint8``, finite."""
    if arr.dtype != np.uint8:
        hint = "convert it with arr.astype(np.uint8) if its values are 0-255"
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ImageError(
                "non-finite",
                f"holds NaN or infinite values (dtype {arr.dtype}); expected uint8 0-255. "
                "Re-export this eraser from the capture software.",
            )
        raise ImageError("dtype", f"has dtype {arr.dtype}, expected uint8; {hint}.")
    if arr.ndim == 3 and arr.shape[0] == len(CHANNELS) and arr.shape[2] != len(CHANNELS):
        raise ImageError(
            "shape",
            f"has shape {arr.shape}, which looks channel-first; expected (H, W, 6). "
            "Transpose it with arr.transpose(1, 2, 0).",
        )
    if arr.ndim != 3 or arr.shape[2] != len(CHANNELS) or arr.shape[0] != arr.shape[1]:
        raise ImageError(
            "shape",
            f"has shape {arr.shape}, expected a square (H, W, 6) array "
            f"with channels {', '.join(CHANNELS)} (delivered erasers are 310x310x6).",
        )
    return arr


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11's parser is not safe to
# run from several threads at once (it fails with "AST constructor recursion depth mismatch",
# CPython issue 106905): the cache decodes erasers in threads, so headers are parsed one at a
# time. The header is a few hundred bytes; the array itself is read outside the lock.
_HEADER_LOCK = threading.Lock()


def _damaged(detail: str) -> ImageError:
    return ImageError("unreadable", f"{detail}. Copy it again from the original delivery.")


def load_npy_bytes(fileobj, where: str) -> np.ndarray:
    """Read one ``.npy`` stream without ever unpickling (object arrays are refused), and
    nothing but the array: bytes after it are refused too."""
    head = fileobj.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = ("a Python pickle, refused for safety" if head[:1] == b"\x80" else
                "empty" if not head else "another kind of file (text, or an image renamed?)")
        raise ImageError(
            "unreadable", f"is not a NumPy .npy file (no .npy header: {what}). Save the eraser "
            "as a plain uint8 array with np.save, or copy it again from the original delivery."
        )
    fileobj.seek(0)
    try:
        with _HEADER_LOCK:
            version = np.lib.format.read_magic(fileobj)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = reader(fileobj)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise _damaged(f"has a damaged .npy header ({exc})") from None
    if dtype.hasobject:
        raise ImageError(
            "unreadable", "holds Python objects, not an image array; it is refused for "
            "safety. Save the eraser as a plain uint8 array with np.save."
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_NPY_MEMBER:
        # reading would allocate it all before noticing the file is shorter
        raise ImageError(
            "shape", f"declares an array of shape {shape} ({dtype}), far larger than an eraser "
            "(310x310x6 uint8); refused unread. Copy it again from the original delivery.")
    try:
        data = bytearray(nbytes)  # writable, so the array needs no copy
        got = fileobj.readinto(data)
        extra = fileobj.read(1)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _damaged(f"could not be read ({exc})") from None
    if got < nbytes:
        raise _damaged(f"is truncated: its header declares {nbytes} bytes of array data, "
                       f"the file holds {got}")
    if extra:
        raise ImageError(
            "unreadable", "holds more bytes after its array (padded, or two files joined); "
            "save the eraser again with np.save, or copy it again from the original delivery.")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return check_array(arr, where)


def load_png_channels(readers: dict[str, callable], where: str) -> np.ndarray:
    """Stack the six ``<ID>_<CH>.png`` files into ``(H, W, 6)`` in CHANNELS order."""
    planes = []
    for ch in CHANNELS:
        try:
            with Image.open(io.BytesIO(readers[ch]())) as img:
                if img.width * img.height > MAX_PNG_PIXELS:
                    raise ImageError(
                        "shape", f"channel {ch} declares {img.width}x{img.height} pixels, far "
                        "more than an eraser (310x310); refused unread. Copy it again from "
                        "the original delivery.")
                img.load()
                if img.mode not in ("L", "P") and not img.mode.startswith("I"):
                    raise ImageError(
                        "dtype", f"channel {ch} is a {img.mode} image; expected 8-bit grayscale "
                        "PNGs, one per channel."
                    )
                if img.mode.startswith("I"):
                    raise ImageError(
                        "dtype", f"channel {ch} is a 16/32-bit image ({img.mode}); expected "
                        "8-bit grayscale (uint8)."
                    )
                plane = np.asarray(img.convert("L"), dtype=np.uint8)
        except ImageError:
            raise
        except Image.DecompressionBombError as e:  # a header past PIL's own pixel limit
            raise ImageError(
                "shape", f"channel {ch} declares far more pixels than an eraser ({e}); refused "
                "unread. Copy it again from the original delivery."
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zipfile.BadZipFile,
                zlib.error) as e:
            # PIL's own message names an in-memory buffer, not the file: keep only its kind
            reason = "not an image" if isinstance(e, UnidentifiedImageError) else str(e)
            raise ImageError(
                "unreadable", f"channel {ch} is truncated or not a PNG ({reason}). Copy it "
                "again from the original delivery."
            ) from None
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ImageError("shape", f"its six channel PNGs differ in size: {sorted(shapes)}.")
    return check_array(np.stack(planes, axis=-1), where)


class ImageSource(ABC):
    """A collection of erasers addressed by id."""

    kind: str

    def __init__(self, location: Path):
        self.location = location
        self.problems: list[Problem] = []

    @abstractmethod
    def ids(self) -> list[str]:
        """Eraser ids, sorted."""

    @abstractmethod
    def read(self, eraser_id: str) -> np.ndarray:
        """Decode one eraser to ``(H, W, 6)`` uint8; raises :class:`ImageError`."""

    @abstractmethod
    def where(self, eraser_id: str) -> str:
        """The file (or archive member) a user should look at for this eraser."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever any image file changes (names, sizes, times or CRCs)."""

    def describe(self) -> str:
        return f"{self.kind} {self.location}"


def _digest(parts: list[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


class NpyFolder(ImageSource):
    kind = "npy folder"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self._files = {strip_extension(p.name): p for p in sorted(folder.glob("*.npy"))}

    def ids(self) -> list[str]:
        return sorted(self._files)

    def where(self, eraser_id: str) -> str:
        return str(self._files[eraser_id])

    def read(self, eraser_id: str) -> np.ndarray:
        path = self._files[eraser_id]
        with open(path, "rb") as f:
            return load_npy_bytes(f, str(path))

    def fingerprint(self) -> str:
        parts = [self.kind, str(self.location.resolve())]
        for name, p in sorted(self._files.items()):
            st = p.stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        return _digest(parts)


def _safe_member(name: str) -> bool:
    """False for members that would land outside the extraction folder (zip slip)."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in posixpath.normpath(name.replace("\\", "/")).split("/")


class _ZipSource(ImageSource):
    """Reads members in place; one ZipFile per thread, since decoding runs in a thread pool."""

    suffix: str

    def __init__(self, archive: Path):
        super().__init__(archive)
        self._local = threading.local()
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError([error(
                "corrupt-zip", str(archive), f"is not a readable zip archive ({exc}). Download "
                "or copy it again, or point at the extracted folder instead.")]) from None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.is_dir():
                continue
            if not _safe_member(info.filename):
                self.problems.append(error(
                    "zip-traversal", f"{archive} member {info.filename!r}",
                    "escapes the archive's folder ('..' or an absolute path); the archive is "
                    "refused. Re-create the zip from the data folder itself."))
                continue
            self._add(info)

    @abstractmethod
    def _add(self, info: zipfile.ZipInfo) -> None: ...

    def _zip(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.location)
        return zf

    def _read_member(self, info: zipfile.ZipInfo) -> bytes:
        limit = MAX_PNG_MEMBER if info.filename.lower().endswith(".png") else MAX_NPY_MEMBER
        if info.file_size > limit:
            raise ImageError(
                "unreadable", f"declares {info.file_size / 1e6:.0f} MB, far more than an "
                f"eraser needs (at most {limit / 1e6:.0f} MB); refused unread. Re-create the "
                "zip from the original files.")
        try:
            with self._zip().open(info) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise ImageError(
                "unreadable", f"is corrupt inside the archive ({exc}). Re-create the zip."
            ) from None
        if len(data) > limit:
            raise ImageError("unreadable", "is larger than its zip entry declares; refused. "
                             "Re-create the zip from the original files.")
        return data

    def fingerprint(self) -> str:
        st = self.location.stat()
        parts = [self.kind, str(self.location.resolve()), str(st.st_size), str(st.st_mtime_ns)]
        parts += [f"{i.filename}:{i.CRC}:{i.file_size}" for i in self._all_infos()]
        return _digest(parts)

    @abstractmethod
    def _all_infos(self) -> list[zipfile.ZipInfo]: ...


class NpyZip(_ZipSource):
    kind = "npy zip"

    def _add(self, info: zipfile.ZipInfo) -> None:
        name = posixpath.basename(info.filename)
        if name.lower().endswith(".npy") and not name.startswith("._"):
            self._infos[strip_extension(name)] = info

    def ids(self) -> list[str]:
        return sorted(self._infos)

    def where(self, eraser_id: str) -> str:
        return f"{self.location}:{self._infos[eraser_id].filename}"

    def read(self, eraser_id: str) -> np.ndarray:
        data = self._read_member(self._infos[eraser_id])
        return load_npy_bytes(io.BytesIO(data), self.where(eraser_id))

    def _all_infos(self) -> list[zipfile.ZipInfo]:
        return [self._infos[k] for k in sorted(self._infos)]


def _split_png_name(name: str) -> tuple[str, str] | None:
    """``P0042_E07_NORMAL.png`` -> (``P0042_E07``, ``NORMAL``); ids may contain underscores."""
    stem, ext = os.path.splitext(name)
    if ext.lower() != ".png" or "_" not in stem:
        return None
    eraser_id, ch = stem.rsplit("_", 1)
    return (eraser_id, ch.upper()) if ch.upper() in CHANNELS and eraser_id else None


class _PngSets:
    """Groups per-channel PNG names by eraser and reports incomplete sets."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, object]] = defaultdict(dict)

    def add(self, name: str, handle: object) -> None:
        parsed = _split_png_name(name)
        if parsed:
            self.members[parsed[0]][parsed[1]] = handle

    def complete(self, location: Path, problems: list[Problem]) -> dict[str, dict[str, object]]:
        full = {}
        for eraser_id, chans in sorted(self.members.items()):
            missing = [c for c in CHANNELS if c not in chans]
            if missing:
                problems.append(error(
                    "missing-channel", f"{location} eraser {eraser_id}",
                    f"has no PNG for channel(s) {', '.join(missing)}; each eraser needs "
                    f"{', '.join(f'{eraser_id}_{c}.png' for c in CHANNELS)}."))
            else:
                full[eraser_id] = chans
        return full


class PngFolder(ImageSource):
    kind = "png folder"

    def __init__(self, folder: Path):
        super().__init__(folder)
        sets = _PngSets()
        for p in sorted(folder.glob("*.png")) + sorted(folder.glob("*.PNG")):
            sets.add(p.name, p)
        self._sets = sets.complete(folder, self.problems)

    def ids(self) -> list[str]:
        return sorted(self._sets)

    def where(self, eraser_id: str) -> str:
        return str(self.location / f"{eraser_id}_<CH>.png")

    def read(self, eraser_id: str) -> np.ndarray:
        chans = self._sets[eraser_id]
        readers = {ch: chans[ch].read_bytes for ch in CHANNELS}
        return load_png_channels(readers, self.where(eraser_id))

    def fingerprint(self) -> str:
        parts = [self.kind, str(self.location.resolve())]
        for eraser_id, chans in sorted(self._sets.items()):
            for ch in CHANNELS:
                st = chans[ch].stat()
                parts.append(f"{eraser_id}_{ch}:{st.st_size}:{st.st_mtime_ns}")
        return _digest(parts)


class PngZip(_ZipSource):
    kind = "png zip"

    def __init__(self, archive: Path):
        self._pngs = _PngSets()
        super().__init__(archive)
        self._sets = self._pngs.complete(archive, self.problems)

    def _add(self, info: zipfile.ZipInfo) -> None:
        name = posixpath.basename(info.filename)
        if not name.startswith("._"):
            self._pngs.add(name, info)

    def ids(self) -> list[str]:
        return sorted(self._sets)

    def where(self, eraser_id: str) -> str:
        return f"{self.location}:{eraser_id}_<CH>.png"

    def read(self, eraser_id: str) -> np.ndarray:
        chans = self._sets[eraser_id]
        readers = {ch: (lambda info=chans[ch]: self._read_member(info)) for ch in CHANNELS}
        return load_png_channels(readers, self.where(eraser_id))

    def _all_infos(self) -> list[zipfile.ZipInfo]:
        return [chans[ch] for _, chans in sorted(self._sets.items()) for ch in CHANNELS]


def _zip_kind(archive: Path) -> type[_ZipSource] | None:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n.lower() for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError([error(
            "corrupt-zip", str(archive), f"is not a readable zip archive ({exc}). Download or "
            "copy it again, or point at the extracted folder instead.")]) from None
    if any(n.endswith(".npy") for n in names):
        return NpyZip
    if any(n.endswith(".png") for n in names):
        return PngZip
    return None


def open_zip(archive: Path) -> _ZipSource:
    """An ``arrays.zip`` or ``images.zip``, whichever its members turn out to be."""
    kind = _zip_kind(archive)
    if kind is None:
        raise DataError([error("unknown-layout", str(archive), "holds neither .npy nor .png "
                               "files. Point at the archive of the eraser images.")])
    return kind(archive)


def discover(path: str | Path) -> tuple[ImageSource, list[Problem]]:
    """Pick the image source under ``path``; returns it with notes about what was skipped.

    Preference (fastest first): ``.npy`` files (in the folder or ``arrays/``), ``arrays.zip``,
    PNGs (in the folder or ``images/``), ``images.zip``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError([error(
            "missing-path", str(path), "does not exist. Pass the folder (or .zip) holding the "
            "eraser arrays or PNGs.")])
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DataError([error(
                "unknown-layout", str(path), "is a file but not a .zip. Pass a folder of .npy "
                "or PNG files, arrays.zip or images.zip.")])
        return open_zip(path), []

    # Fastest to decode first; the first match wins and the others are named in a note.
    candidates: list[tuple[Path, callable]] = []
    for sub in NPY_DIRS:
        folder = path / sub if sub else path
        if folder.is_dir() and any(folder.glob("*.npy")):
            candidates.append((folder, NpyFolder))
    if (path / "arrays.zip").is_file():
        candidates.append((path / "arrays.zip", open_zip))
    for sub in PNG_DIRS:
        folder = path / sub if sub else path
        if folder.is_dir() and any(folder.glob("*.[pP][nN][gG]")):
            candidates.append((folder, PngFolder))
    if (path / "images.zip").is_file():
        candidates.append((path / "images.zip", open_zip))
    if not candidates:
        raise DataError([error(
            "unknown-layout", str(path), "holds no eraser images: expected <ID>.npy files "
            "(here or in arrays/), arrays.zip, <ID>_<CH>.png files (here or in images/) or "
            "images.zip.")])
    chosen, make = candidates[0]
    notes = [warning("skipped-source", str(other), f"also holds images; using {chosen} instead.")
             for other, _ in candidates[1:]]
    return make(chosen), notes
