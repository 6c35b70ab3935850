"""The .pth format: make/save/load round trip and safety refusals (InspectionModel and
predict themselves: tests/model/test_inference.py)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model.checkpoint import FORMAT, FORMAT_VERSION, SINGLE_VERSION
from model.config import CHANNELS, CNNConfig
from model.inference import InspectionModel
from model.metrics import GRADED, PROB_NAMES, ThresholdPolicy
from tests.model.shared import CFG, MEAN, STD, THRESHOLDS, trained_net


class Foreign:
    """Anything outside the weights_only allow-list."""


def _ckpt(net=None, cfg: CNNConfig = CFG, **meta):
    return model.make_checkpoint(
        net=net if net is not None else trained_net(cfg),
        cfg=cfg,
        mean=np.array(MEAN, dtype=np.float32),
        std=np.array(STD, dtype=np.float32),
        thresholds=THRESHOLDS,
        threshold_policy=ThresholdPolicy(),
        metrics={"graded_ap": np.float64(0.8), "defect_f1": 0.7, "print_error_ap": float("nan")},
        **meta,
    )


def _raw(n: int = 5, size: int = 310, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 6), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    net = trained_net()
    ckpt = _ckpt(net, study="demo", trial=np.int64(7), params={"lr": np.float32(0.001)})
    path = model.save_checkpoint(ckpt, tmp_path_factory.mktemp("ckpt") / "sub" / "team.pth")
    return path, net


def test_plain_dict_loads_with_weights_only(saved):
    path, _ = saved
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == FORMAT and ckpt["format_version"] == SINGLE_VERSION
    assert ckpt["arch"] == CFG.to_dict()
    assert ckpt["task"] == "multilabel"
    assert ckpt["class_names"] == list(GRADED)
    assert ckpt["prob_names"] == list(PROB_NAMES)
    assert ckpt["channels"] == ["GRAY", "G", "NORMAL"]
    assert ckpt["source_channels"] == list(CHANNELS)
    assert ckpt["input_size"] == 32 and ckpt["source_size"] == 310
    assert ckpt["normalization"]["mean"] == pytest.approx(MEAN)
    assert ckpt["thresholds"] == THRESHOLDS
    assert ckpt["threshold_policy"] == {"kind": "max_f1", "min_recall": None}
    assert ckpt["val_metrics"]["graded_ap"] == pytest.approx(0.8)
    assert math.isnan(ckpt["val_metrics"]["print_error_ap"])
    assert ckpt["study"] == "demo" and ckpt["trial"] == 7 and type(ckpt["trial"]) is int
    assert {"python", "torch", "numpy", "scikit-learn"} <= set(ckpt["versions"])
    assert ckpt["created"].endswith("+00:00")
    assert all(t.device.type == "cpu" for t in ckpt["state_dict"].values())
    assert "features.block0.conv0.weight" in ckpt["state_dict"]
    # Written atomically: no temp file left next to it.
    assert [p.name for p in path.parent.iterdir()] == ["team.pth"]


def test_load_reproduces_outputs_exactly(saved):
    path, net = saved
    original = InspectionModel(net, CFG, MEAN, STD, THRESHOLDS).eval()
    loaded = model.load(path)
    assert not loaded.training
    assert loaded.thresholds == THRESHOLDS
    assert "state_dict" not in loaded.meta and loaded.meta["study"] == "demo"
    x = _raw(4, size=64, seed=1)
    with torch.no_grad():
        a_cls, a_def = original(x)
        b_cls, b_def = loaded(x)
    assert a_cls.shape == (4, 3) and a_def.shape == (4,)
    assert torch.equal(a_cls, b_cls) and torch.equal(a_def, b_def)


def test_make_checkpoint_unwraps_inspection_model():
    net = trained_net()
    wrapped = InspectionModel(net, CFG, MEAN, STD)
    a, b = _ckpt(net)["state_dict"], _ckpt(wrapped)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_make_checkpoint_rejects_bad_input():
    with pytest.raises(ValueError, match="reserved"):
        _ckpt(state_dict={})
    with pytest.raises(TypeError, match="weights_only"):
        _ckpt(extra={"obj": Foreign()})
    with pytest.raises(ValueError, match="mean/std"):
        model.make_checkpoint(
            net=trained_net(),
            cfg=CFG,
            mean=[0.5],
            std=[0.2],
            thresholds=THRESHOLDS,
            threshold_policy={"kind": "max_f1", "min_recall": None},
            metrics={},
        )


def test_source_size_can_be_overridden(tmp_path):
    ckpt = _ckpt(source_size=256)
    assert ckpt["source_size"] == 256


def test_refuses_arbitrary_pickle(tmp_path):
    path = tmp_path / "evil.pth"
    ckpt = _ckpt()
    ckpt["payload"] = Foreign()
    torch.save(ckpt, path)
    with pytest.raises(model.CheckpointError, match=r"safety.*weights_only|weights_only") as e:
        model.load_checkpoint(path)
    assert str(path) in str(e.value)


def test_refuses_non_torch_files(tmp_path):
    for name, content in (("text.pth", b"hello, not a model"), ("empty.pth", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(model.CheckpointError, match="not a readable PyTorch") as e:
            model.load(path)
        assert name in str(e.value)
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT}))
    with pytest.raises(model.CheckpointError, match="not a readable PyTorch"):
        model.load_checkpoint(path)


def test_refuses_foreign_dict_and_non_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(model.CheckpointError, match="not a MILAN eraser model"):
        model.load_checkpoint(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(model.CheckpointError, match="not a MILAN eraser model"):
        model.load_checkpoint(path)
    torch.save({"format": FORMAT}, path)
    with pytest.raises(model.CheckpointError, match="no valid format version"):
        model.load_checkpoint(path)
    ckpt = _ckpt()
    del ckpt["normalization"]
    torch.save(ckpt, path)
    with pytest.raises(model.CheckpointError, match="incomplete"):
        model.load_checkpoint(path)


def test_refuses_newer_format_and_missing_file(tmp_path):
    ckpt = _ckpt()
    ckpt["format_version"] = FORMAT_VERSION + 1
    path = model.save_checkpoint(ckpt, tmp_path / "future.pth")
    with pytest.raises(model.CheckpointError, match="newer"):
        model.load_checkpoint(path)
    with pytest.raises(model.CheckpointError, match="does not exist"):
        model.load(tmp_path / "missing.pth")


def test_mismatched_weights_are_a_checkpoint_error(tmp_path):
    ckpt = _ckpt()
    ckpt["arch"]["widths"] = [8, 32]
    path = model.save_checkpoint(ckpt, tmp_path / "mismatch.pth")
    with pytest.raises(model.CheckpointError, match="rebuild"):
        model.load(path)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_other_heads_round_trip(tmp_path, task):
    cfg = CNNConfig(
        channels=CHANNELS,
        input_size=32,
        widths=(4, 8),
        kernel_sizes=(3, 3),
        head_pool="flatten",
        task=task,
    )
    net = trained_net(cfg)
    ckpt = model.make_checkpoint(
        net=net,
        cfg=cfg,
        mean=[0.5] * 6,
        std=[0.25] * 6,
        thresholds=THRESHOLDS,
        threshold_policy=ThresholdPolicy("min_recall", 0.9),
        metrics={},
    )
    m = model.load(model.save_checkpoint(ckpt, tmp_path / f"{task}.pth"))
    assert m.meta["threshold_policy"] == {"kind": "min_recall", "min_recall": 0.9}
    raw = _raw(2, size=310)
    with torch.no_grad():
        ref = InspectionModel(net, cfg, [0.5] * 6, [0.25] * 6).eval()(raw)
        out = m(raw)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        model.save_checkpoint(_ckpt(), tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spoil, expect", [
    (lambda t: t.pop("print_error"), "no threshold for print_error"),
    (lambda t: t.update(defect=float("nan")), "defect nan"),
    (lambda t: t.update(no_defect=1.5), "no_defect 1.5"),
])
def test_refuses_thresholds_that_lack_or_break_a_class(tmp_path, spoil, expect):
    ckpt = _ckpt()
    spoil(ckpt["thresholds"])
    path = model.save_checkpoint(ckpt, tmp_path / "partial.pth")
    with pytest.raises(model.CheckpointError, match="unusable thresholds") as info:
        model.load(path)
    assert expect in str(info.value)
