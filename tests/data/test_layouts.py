"""One delivery in every accepted layout loads to identical tensors, and the model's own
resize matches the cache's, so training and inference see the same pixels."""

import shutil

import numpy as np
import pytest
import torch

import data
from data.pipeline import Preprocessor
from data.synth import generate
from model import CNNConfig, InspectionModel, build_model, channel_indices


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


def test_training_and_inference_see_the_same_input(layouts, tmp_path):
    """The cached resize + training preprocessor and the model's own preprocessing of the raw
    arrays give the same network input (both are model.preprocess)."""
    erasers = data.load_data(layouts["npy"], cache_dir=tmp_path / "cache")
    raw = torch.from_numpy(erasers.images()).permute(0, 2, 3, 1)  # (B, H, W, 6) as delivered
    cfg = CNNConfig(channels=("GRAY", "NORMAL"), input_size=24, widths=(8, 8),
                    kernel_sizes=(3, 3))
    idx = channel_indices(cfg.channels)
    mean, std = [0.4, 0.5], [0.2, 0.25]
    trained = Preprocessor(idx, mean, std)(torch.from_numpy(erasers.images(24)))
    served = InspectionModel(build_model(cfg), cfg, mean, std).preprocess(raw)
    torch.testing.assert_close(trained, served, rtol=0, atol=1e-6)


def test_data_package_exports_are_complete():
    assert set(data.__all__) == set(data._EXPORTS)
    for name in data.__all__:
        assert getattr(data, name) is not None
