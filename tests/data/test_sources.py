import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.errors import DataError
from data.sources import NpyFolder, NpyZip, PngFolder, PngZip, discover, strip_extension
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
