"""Scoring an exported model on an EraserSet (training.scoring)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from model import GRADED, PROB_NAMES, CNNConfig, InspectionModel, evaluate
from training import scoring
from training.scoring import graded_table, predict_set, score

CFG = CNNConfig(channels=("GRAY", "W", "NORMAL"), input_size=32, widths=(8, 16),
                kernel_sizes=(3, 3), convs_per_block=1, dense_width=0, task="multilabel")
THRESHOLDS = {"print_error": 0.3, "physical_error": 0.6, "no_defect": 0.5, "defect": 0.45}


@pytest.fixture(scope="module")
def net() -> InspectionModel:
    torch.manual_seed(0)
    return InspectionModel(model.build_model(CFG), CFG, [0.5] * 3, [0.25] * 3,
                           THRESHOLDS).eval()


def test_predict_set_equals_predicting_the_delivered_arrays(net, synthetic, synthetic_set):
    ids = synthetic_set.ids[:6]
    probs = predict_set(net, synthetic_set, ids, batch_size=4)
    assert probs.shape == (6, len(PROB_NAMES)) and np.isfinite(probs).all()
    raw = np.stack([np.load(synthetic / "arrays" / f"{k}.npy") for k in ids])
    assert raw.shape[1] == 64  # the model resizes 64 -> 32 itself here
    np.testing.assert_allclose(probs, model.predict(net, raw), atol=1e-6)


def test_predict_set_defaults_to_every_eraser_in_chunks(net, synthetic_set, monkeypatch):
    monkeypatch.setattr(scoring, "CHUNK", 24)  # 64 erasers: three chunks, the last short
    probs = predict_set(net, synthetic_set)
    assert probs.shape == (len(synthetic_set), 4)
    monkeypatch.setattr(scoring, "CHUNK", 512)
    np.testing.assert_allclose(predict_set(net, synthetic_set), probs, atol=1e-6)


def test_score_uses_the_models_thresholds_not_re_tuned_ones(net):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(40, 2))
    probs = rng.uniform(size=(40, 4))
    m = score(net, probs, targets)
    assert m["threshold_defect"] == pytest.approx(0.45)
    assert m["threshold_physical_error"] == pytest.approx(0.6)
    assert m == evaluate(probs, targets, thresholds=THRESHOLDS)


def test_graded_table_rows():
    metrics = {f"{n}_{k}": i + (0.5 if k == "f1" else 0.0)
               for i, n in enumerate((*GRADED, "defect")) for k in ("ap", "f1")}
    rows = graded_table(metrics)
    assert [r[0] for r in rows] == [*GRADED, "defect"]
    assert rows[-1] == ("defect", 3, 3.5)
