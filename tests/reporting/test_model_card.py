"""The model card (reporting.model_card) from a checkpoint dict alone. (A card next to a real
export, with its ONNX file and TTA finding: tests/search/test_export.py.)"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pytest

import model
from model import GRADED, PROB_NAMES, OnnxCheck, ThresholdPolicy
from reporting.model_card import model_card

GROUP = "team_x"
CFG = model.CNNConfig(input_size=32, widths=(8, 16), kernel_sizes=(3, 3), convs_per_block=1,
                      dense_width=0)


@pytest.fixture
def rich(tmp_path):
    """A checkpoint with everything a card can show, saved with a (fake) ONNX file."""
    metrics = {f"{n}_{k}": 0.8 for n in (*GRADED, "defect")
               for k in ("ap", "f1", "precision", "recall")}
    metrics["print_error_ap"] = math.nan
    ckpt = model.make_checkpoint(
        net=model.build_model(CFG), cfg=CFG, mean=[0.5] * 6, std=[0.2] * 6,
        thresholds=dict.fromkeys(PROB_NAMES, 0.42),
        threshold_policy=ThresholdPolicy("min_recall", 0.9),
        metrics={**metrics, "graded_ap": 0.77, "graded_f1": 0.7}, group=GROUP, study="demo",
        trial=3, value=0.77, params={"lr": 0.001, "depth": 2}, best_epoch=5, epochs_run=8,
        tta={"recommended": True, "n_val": 10, "min_gain": 0.005, "graded_ap": 0.7,
             "graded_ap_tta": 0.75, "graded_f1": 0.6, "graded_f1_tta": 0.65,
             "defect_ap": 0.8, "defect_ap_tta": 0.82, "defect_f1": 0.7, "defect_f1_tta": 0.71},
        retrained={"n_erasers": 48, "epochs": 5, "seed": 0, "on": "train+validation"})
    pth = model.save_checkpoint(ckpt, tmp_path / f"{GROUP}.pth")
    onnx = tmp_path / f"{GROUP}.onnx"
    onnx.write_bytes(b"onnx bytes")
    return ckpt, pth, onnx


def test_card_from_a_bare_checkpoint(tmp_path):
    cfg = model.CNNConfig(input_size=32, widths=(8, 16), kernel_sizes=(3, 3),
                          convs_per_block=1, dense_width=0)
    ckpt = model.make_checkpoint(
        net=model.build_model(cfg), cfg=cfg, mean=[0.5] * 6, std=[0.2] * 6,
        thresholds=dict.fromkeys(PROB_NAMES, 0.5), threshold_policy=ThresholdPolicy(),
        metrics={}, group=GROUP)
    pth = model.save_checkpoint(ckpt, tmp_path / f"{GROUP}.pth")
    text = model_card(ckpt, pth)
    assert "None recorded." in text and "Not measured" in text
    assert "## Without this repository" not in text
    assert "optimistic for new erasers" not in text  # no metrics, no caveat about them
    assert "`max_f1`" in text and "torch.load('team_x.pth', weights_only=True)" in text


def test_card_shows_metrics_policy_tta_refit_and_file_hashes(rich):
    ckpt, pth, onnx = rich
    pt2 = onnx.with_suffix(".pt2")
    pt2.write_bytes(b"pt2 bytes")
    text = model_card(ckpt, pth, standalone=[(pt2, [OnnxCheck("validation", 9, 48, 3e-7)]),
                                             (onnx, [OnnxCheck("random", 4, 48, 2e-6)])])
    assert text.startswith(f"# {GROUP}: MILAN eraser inspection model")
    assert "study `demo`, trial 3 (validation score 0.77)" in text
    assert "**Retrained on train + validation** (48 erasers, 5 epochs" in text
    for path in (pth, onnx, pt2):
        assert f"| `{path.name}` | `{hashlib.sha256(path.read_bytes()).hexdigest()}` |" in text
    assert "| print_error | n/a | 0.8 | 0.8 | 0.8 | 0.42 |" in text  # NaN shown as n/a
    assert "| **mean (graded)** | 0.77 | 0.7 | | | |" in text
    assert "`min_recall`" in text and "recall >= 0.9" in text
    assert "**recommended**" in text and "| graded_ap | 0.7 | 0.75 |" in text
    assert "| `depth` | 2 |" in text and "Weights of epoch 5 of 8." in text
    assert "## Without this repository" in text
    assert ("`team_x.onnx` checked against the `.pth` with onnxruntime on 4 random erasers "
            "(48 px): max |difference| 2e-06") in text
    assert "`team_x.pt2` checked against the `.pth` with torch.export" in text
    assert "torch.export.load('team_x.pt2').module()" in text
    assert "InferenceSession('team_x.onnx'" in text and text.endswith("```\n")


def test_card_of_an_ensemble_lists_its_members_and_the_single_best_beside_it(tmp_path):
    members = [model.make_checkpoint(
        net=model.build_model(c), cfg=c, mean=[0.5] * 6, std=[0.2] * 6,
        thresholds=dict.fromkeys(PROB_NAMES, 0.5), threshold_policy=ThresholdPolicy(),
        metrics={"graded_ap": ap}, trial=t, best_epoch=4, epochs_run=6)
        for c, ap, t in ((CFG, 0.71, 3), (replace(CFG, input_size=48), 0.69, 8))]
    single = {"graded_ap": 0.71, "graded_f1": 0.6}
    ckpt = model.make_ensemble_checkpoint(
        members, [0.75, 0.25], thresholds=dict.fromkeys(PROB_NAMES, 0.4),
        threshold_policy=ThresholdPolicy(), metrics={"graded_ap": 0.76, "graded_f1": 0.66},
        group=GROUP, study="demo", trial=3, value=0.76,
        ensemble={"trials": [3, 8], "weights": [0.75, 0.25], "metric": "graded_ap",
                  "score": 0.76, "honest": 0.74, "single": 0.71, "noise": 0.01, "pool": 8,
                  "single_val_metrics": single,
                  "single_test_metrics": {"graded_ap": 0.65, "graded_f1": 0.55}},
        test_metrics={"n": 30, "graded_ap": 0.7, "graded_f1": 0.58})
    pth = model.save_checkpoint(ckpt, tmp_path / f"{GROUP}.pth")
    text = model_card(ckpt, pth)
    assert "study `demo`: an ensemble of trials 3, 8" in text
    assert "**An ensemble of 2 trials**" in text and "+0.0300 graded_ap" in text
    assert "| 3 | 0.75 |" in text and "| 8 | 0.25 |" in text and "48 px" in text
    assert "| trial 3 alone | 0.71 | 0.6 | 0.65 | 0.55 |" in text
    assert "| ensemble (shipped) | 0.76 | 0.66 | 0.7 | 0.58 |" in text
    assert "members = ckpt['members']" in text
