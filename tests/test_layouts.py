"""One delivery in every accepted layout loads to identical tensors, and the model's own
resize matches the cache's, so training and inference see the same pixels."""

import shutil

import numpy as np
import pytest
import torch

import data
from data.cache import resize_uint8
from data.synth import generate
from model import resize_raw


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    src = tmp_path_factory.mktemp("synth")
    generate(src, n=12, seed=2, size=40, png=True, zip_arrays=True, zip_images=True,
             workers=1)
    out = {}
    for name, items in {"npy": ["arrays"], "arrays.zip": ["arrays.zip"],
                        "png": ["images"], "images.zip": ["images.zip"]}.items():
        folder = tmp_path_factory.mktemp(name.replace(".", "_"))
        for item in items:
            (shutil.copytree if (src / item).is_dir() else shutil.copy)(src / item, folder / item)
        for csv in ("labels_binary.csv", "labels_multiclass.csv"):
            shutil.copy(src / csv, folder / csv)
        out[name] = folder
    return out


def test_every_layout_loads_identical_tensors(layouts, tmp_path):
    sets = {name: data.load_data(path, cache_dir=tmp_path / name)
            for name, path in layouts.items()}
    ref = sets["npy"]
    assert "npy folder" in ref.source and "png zip" in sets["images.zip"].source
    for name, s in sets.items():
        assert s.ids == ref.ids, name
        np.testing.assert_array_equal(s.targets, ref.targets)
        np.testing.assert_array_equal(s.images(), ref.images())
        np.testing.assert_array_equal(s.images(24), ref.images(24))
        assert s.data_hash == ref.data_hash, name


def test_model_resize_equals_the_cache_resize():
    x = torch.randint(0, 256, (3, 6, 310, 310), dtype=torch.uint8)
    for size in (32, 96, 128, 160):
        cached = resize_uint8(x, size)
        on_the_fly = resize_raw(x.float(), size)
        assert torch.equal(cached.float(), on_the_fly), size


def test_data_package_exports_are_complete():
    assert set(data.__all__) == set(data._EXPORTS)
    for name in data.__all__:
        assert getattr(data, name) is not None
