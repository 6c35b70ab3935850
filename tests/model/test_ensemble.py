"""An ensemble of networks shipped as one model: the weighted mean of their probabilities,
in a .pth that loads with weights_only=True, in ONNX and in a .pt2."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import model
from model.checkpoint import FORMAT_VERSION, make_checkpoint, make_ensemble_checkpoint
from model.ensemble import EnsembleModel, parts, summary
from model.metrics import PROB_NAMES, ThresholdPolicy
from model.onnx import compare_onnx, export_onnx, random_images
from model.pt2 import compare_pt2, export_pt2, load_pt2

THRESHOLDS = dict.fromkeys(PROB_NAMES, 0.5)


def member(channels: tuple[str, ...], size: int, task: str, seed: int) -> dict:
    """A single-network checkpoint with BatchNorm statistics that are not the defaults."""
    torch.manual_seed(seed)
    cfg = model.CNNConfig(channels=channels, input_size=size, widths=(8, 16),
                          kernel_sizes=(3, 3), convs_per_block=1, dense_width=0, task=task)
    net = model.build_model(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, cfg.in_channels, size, size) * 2 + 0.5)
    n = len(channels)
    return make_checkpoint(net=net.eval(), cfg=cfg, mean=[0.4] * n, std=[0.2] * n,
                           thresholds=THRESHOLDS, threshold_policy=ThresholdPolicy(),
                           metrics={"graded_ap": 0.5 + seed / 100}, trial=seed)


@pytest.fixture(scope="module")
def members() -> list[dict]:
    # unlike members: other channels, input sizes and heads
    return [member(("GRAY", "NORMAL"), 32, "multilabel", 1),
            member(("GRAY", "G", "R", "NORMAL"), 40, "multiclass", 2),
            member(("NORMAL",), 24, "binary", 3)]


@pytest.fixture(scope="module")
def saved(members, tmp_path_factory):
    ckpt = make_ensemble_checkpoint(
        members, [2, 1, 1], thresholds={**THRESHOLDS, "defect": 0.45},
        threshold_policy=ThresholdPolicy(), metrics={"graded_ap": 0.7}, group="team_x",
        study="s", trial=1, source_size=48)
    return model.save_checkpoint(ckpt, tmp_path_factory.mktemp("ens") / "team_x.pth")


def test_the_file_is_plain_data_of_the_newest_format(saved, members):
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["kind"] == "ensemble" and ckpt["format_version"] == FORMAT_VERSION
    assert len(ckpt["members"]) == 3 and ckpt["member_weights"] == [2.0, 1.0, 1.0]
    assert ckpt["members"][1]["arch"] == members[1]["arch"]
    assert "versions" not in ckpt["members"][0]  # provenance is the ensemble's, once


def test_loaded_ensemble_is_the_weighted_mean_of_its_members(saved, members):
    net = model.load(saved)
    assert isinstance(net, EnsembleModel) and not net.training
    assert net.thresholds["defect"] == 0.45 and net.meta["group"] == "team_x"
    assert [w for _, w in parts(net)] == pytest.approx([0.5, 0.25, 0.25])
    images = random_images(5, 48, seed=3)
    got = model.predict(net, images)
    singles = [model.predict(model.model_from_checkpoint(m), images) for m in members]
    expected = 0.5 * singles[0] + 0.25 * singles[1] + 0.25 * singles[2]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.shape == (5, 4) and np.isfinite(got).all()
    assert summary(net).startswith("ensemble of 3: 0.50 x ")


def test_onnx_and_pt2_of_an_ensemble_agree_with_pytorch(saved, tmp_path):
    net = model.load(saved)
    images = random_images(3, 48, seed=4)
    session = ort.InferenceSession(str(export_onnx(net, tmp_path / "e.onnx")),
                                   providers=["CPUExecutionProvider"])
    assert compare_onnx(net, session, images).ok
    module, meta = load_pt2(export_pt2(net, tmp_path / "e.pt2"))
    check = compare_pt2(net, module, images)
    assert check.ok, check.max_diff
    assert len(meta["members"]) == 3 and meta["thresholds"]["defect"] == 0.45


@pytest.mark.parametrize(("weights", "match"), [([1, 1], "3 members but 2 weights"),
                                                 ([1, 0, 1], "positive")])
def test_bad_member_weights_are_refused(members, weights, match):
    nets = [model.model_from_checkpoint(m) for m in members]
    with pytest.raises(ValueError, match=match):
        EnsembleModel(nets, weights)


def test_an_ensemble_missing_a_member_part_is_refused_on_load(members, tmp_path):
    ckpt = make_ensemble_checkpoint(members[:2], [1, 1], thresholds=THRESHOLDS,
                                    threshold_policy=ThresholdPolicy(), metrics={})
    del ckpt["members"][1]["state_dict"]
    path = model.save_checkpoint(ckpt, tmp_path / "bad.pth")
    with pytest.raises(model.CheckpointError, match="ensemble member 1 lacks"):
        model.load(path)


def test_a_member_cannot_itself_be_an_ensemble(members):
    inner = make_ensemble_checkpoint(members[:2], [1, 1], thresholds=THRESHOLDS,
                                     threshold_policy=ThresholdPolicy(), metrics={})
    with pytest.raises(ValueError, match="cannot be an ensemble"):
        make_ensemble_checkpoint([members[0], inner], [1, 1], thresholds=THRESHOLDS,
                                 threshold_policy=ThresholdPolicy(), metrics={})
