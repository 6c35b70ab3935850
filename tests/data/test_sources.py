import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.errors import DataError
from data.sources import (
    ImageError,
    NpyFolder,
    NpyZip,
    PngFolder,
    PngZip,
    discover,
    load_npy_bytes,
    strip_extension,
)
from model.channels import CHANNELS
from tests.conftest import write_delivery


def write_pngs(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, arr in arrays.items():
        for c, ch in enumerate(CHANNELS):
            Image.fromarray(arr[:, :, c]).save(folder / f"{k}_{ch}.png")


def test_strip_extension():
    assert strip_extension("E001.npy") == "E001"
    assert strip_extension(" P0042_E07 ") == "P0042_E07"
    assert strip_extension("a.b.PNG") == "a.b"


def test_every_layout_reads_the_same_arrays(tmp_path):
    ids = ["P0001_E01", "P0001_E02", "P0002_E01"]
    arrays = write_delivery(tmp_path / "npy", ids=ids)
    write_pngs(tmp_path / "png" / "images", arrays)
    with zipfile.ZipFile(tmp_path / "arrays.zip", "w") as zf:
        for k in ids:
            zf.write(tmp_path / "npy" / "arrays" / f"{k}.npy", f"arrays/{k}.npy")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as zf:
        for p in sorted((tmp_path / "png" / "images").glob("*.png")):
            zf.write(p, p.name)
    sources = [
        (tmp_path / "npy", NpyFolder), (tmp_path / "arrays.zip", NpyZip),
        (tmp_path / "png", PngFolder), (tmp_path / "images.zip", PngZip),
    ]
    for path, kind in sources:
        source, _ = discover(path)
        assert isinstance(source, kind)
        assert source.ids() == sorted(ids)
        for k in ids:
            np.testing.assert_array_equal(source.read(k), arrays[k])


def test_npy_preferred_over_pngs_with_a_note(tmp_path):
    arrays = write_delivery(tmp_path)
    write_pngs(tmp_path / "images", arrays)
    source, notes = discover(tmp_path)
    assert isinstance(source, NpyFolder)
    assert any("images" in n.where for n in notes)


def test_zip_traversal_is_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros((8, 8, 6), np.uint8))
    with zipfile.ZipFile(tmp_path / "arrays.zip", "w") as zf:
        zf.writestr("arrays/E1.npy", buf.getvalue())
        zf.writestr("../evil.npy", buf.getvalue())
    source, _ = discover(tmp_path / "arrays.zip")
    assert [p.kind for p in source.problems] == ["zip-traversal"]
    assert "../evil.npy" in source.problems[0].where
    assert source.ids() == ["E1"]


def test_corrupt_zip(tmp_path):
    (tmp_path / "arrays.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError) as info:
        discover(tmp_path)
    assert info.value.errors[0].kind == "corrupt-zip"


def test_missing_png_channel(tmp_path):
    arrays = write_delivery(tmp_path / "d", n=2)
    write_pngs(tmp_path / "png", arrays)
    (tmp_path / "png" / "E001_NORMAL.png").unlink()
    source, _ = discover(tmp_path / "png")
    assert source.ids() == ["E000"]
    assert source.problems[0].kind == "missing-channel"
    assert "NORMAL" in source.problems[0].message


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no eraser images"):
        discover(tmp_path)


def _one_eraser(tmp_path: Path, payload: bytes, compression=zipfile.ZIP_STORED) -> NpyZip:
    archive = tmp_path / "arrays.zip"
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("arrays/E1.npy", payload)
    return NpyZip(archive)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_zip_members_hold_the_array_and_nothing_more(tmp_path):
    arr = np.zeros((16, 16, 6), np.uint8)
    assert (_one_eraser(tmp_path, _npy(arr)).read("E1") == arr).all()
    with pytest.raises(ImageError, match="more bytes after its array"):
        _one_eraser(tmp_path, _npy(arr) + b"\0" * 100).read("E1")
    with pytest.raises(ImageError, match="refused unread"):  # never decompressed
        _one_eraser(tmp_path, _npy(arr) + b"\0" * (33 * 2**20), zipfile.ZIP_DEFLATED).read("E1")


@pytest.mark.parametrize("payload, expect", [
    (b"ID,label\nE1,1_0\n", "another kind of file"),
    (b"\x80\x04K\x01.", "a Python pickle, refused for safety"),
    (b"", "empty"),
])
def test_files_named_npy_that_are_not_say_what_they_are(tmp_path, payload, expect):
    (tmp_path / "E1.npy").write_bytes(payload)
    with pytest.raises(ImageError, match=r"not a NumPy \.npy file") as info:
        NpyFolder(tmp_path).read("E1")
    assert expect in str(info.value) and "holds Python objects" not in str(info.value)


def test_an_npy_header_claiming_a_huge_array_is_refused_unread(tmp_path):
    buf = io.BytesIO()  # a valid header for 60 GB, then a few bytes
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": (99999, 99999, 6)})
    (tmp_path / "E1.npy").write_bytes(buf.getvalue() + b"\0" * 100)
    with pytest.raises(ImageError, match="refused unread"):
        NpyFolder(tmp_path).read("E1")


def test_npy_layouts_and_damage_are_read_right():
    arr = np.arange(12 * 12 * 6, dtype=np.uint8).reshape(12, 12, 6)
    fortran = load_npy_bytes(io.BytesIO(_npy(np.asfortranarray(arr))), "E1")
    assert (fortran == arr).all() and fortran.flags.writeable
    with pytest.raises(ImageError, match="is truncated"):
        load_npy_bytes(io.BytesIO(_npy(arr)[:-10]), "E1")
    with pytest.raises(ImageError, match="holds Python objects"):
        buf = io.BytesIO()
        np.save(buf, np.array([None, 1], dtype=object), allow_pickle=True)
        load_npy_bytes(io.BytesIO(buf.getvalue()), "E1")


def test_many_threads_decode_at_once():
    # the cache decodes in threads; numpy's header parser is not thread-safe on CPython 3.11
    payload = _npy(np.full((8, 8, 6), 7, np.uint8))
    with ThreadPoolExecutor(8) as pool:
        sums = set(pool.map(lambda _: int(load_npy_bytes(io.BytesIO(payload), "E").sum()),
                            range(4000)))
    assert sums == {7 * 8 * 8 * 6}
