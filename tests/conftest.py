"""Shared fixtures: tiny deliveries written in the real MILAN format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.postgres_fixture import postgres_cluster, postgres_url  # noqa: F401 (fixtures)

# Two cores on CI: keep torch from oversubscribing them in every test process (or the cores
# this process may use, when it is pinned to fewer).
torch.set_num_threads(min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1))

# Tests never reach the Hugging Face hub, nor a user's own weights: pretrained backbones
# load the random stand-in weights of the `backbone_weights` fixture, through the same path.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("ERASER_WEIGHTS", None)

CODES = ("0_0", "0_1", "1_0", "1_1")
STAND_IN_BACKBONES = ("tf_efficientnet_lite0", "mobilenetv3_large_100")


def write_delivery(folder: Path, n: int = 12, size: int = 16, seed: int = 0,
                   ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Random erasers as ``arrays/<ID>.npy`` plus both label CSVs; returns the arrays."""
    rng = np.random.default_rng(seed)
    (folder / "arrays").mkdir(parents=True, exist_ok=True)
    ids = ids or [f"E{i:03d}" for i in range(n)]
    arrays = {}
    for k in ids:
        arr = rng.integers(0, 256, size=(size, size, 6), dtype=np.uint8)
        np.save(folder / "arrays" / f"{k}.npy", arr)
        arrays[k] = arr
    codes = [CODES[i % 4] for i in range(len(ids))]
    (folder / "multi.csv").write_text(
        "ID,label\n" + "".join(f"{k},{c}\n" for k, c in zip(ids, codes, strict=True)))
    (folder / "binary.csv").write_text(
        "ID,error\n" + "".join(f"{k}.npy,{int(c != '0_0')}\n"
                               for k, c in zip(ids, codes, strict=True)))
    return arrays


@pytest.fixture
def delivery(tmp_path: Path) -> Path:
    folder = tmp_path / "delivery"
    write_delivery(folder)
    return folder


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MILAN delivery (64 erasers at 64 px, half defective)."""
    from data.synth import generate

    folder = tmp_path_factory.mktemp("synthetic") / "erasers"
    generate(folder, n=64, seed=0, size=64, defect_rate=0.5, workers=1)
    return folder


@pytest.fixture(scope="session")
def synthetic_set(synthetic: Path, tmp_path_factory: pytest.TempPathFactory):
    from data import load_data

    return load_data(synthetic, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of weight files as a user would give them (``<backbone>.pth``, timm's layout
    for three-channel RGB input with its ImageNet classifier): random, seeded stand-ins for
    the real ImageNet weights, which tests cannot download."""
    import timm

    folder = tmp_path_factory.mktemp("weights")
    for i, name in enumerate(STAND_IN_BACKBONES):
        torch.manual_seed(i)
        torch.save(timm.create_model(name, pretrained=False).state_dict(),
                   folder / f"{name}.pth")
    return folder
