"""Probabilities per head, threshold policies, evaluate() against direct sklearn calls."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from model.metrics import (
    DEFAULT_THRESHOLD,
    GRADED,
    PROB_NAMES,
    SCORES,
    ThresholdPolicy,
    choose_threshold,
    choose_thresholds,
    confusion,
    evaluate,
    probabilities,
    score,
    targets_to_truth,
)


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_names():
    assert PROB_NAMES == ("print_error", "physical_error", "no_defect", "defect")
    assert GRADED == ("print_error", "physical_error", "no_defect")


def test_probabilities_multilabel():
    p = probabilities(torch.tensor([[0.0, 1.0]]), "multilabel")[0].tolist()
    pp, pq = 0.5, _sig(1.0)
    assert p == pytest.approx([pp, pq, (1 - pp) * (1 - pq), 1 - (1 - pp) * (1 - pq)])


def test_probabilities_binary_copies_defect():
    p = probabilities(torch.tensor([[2.0], [-1.0]]), "binary")
    assert p.shape == (2, 4)
    assert p[0].tolist() == pytest.approx([_sig(2), _sig(2), 1 - _sig(2), _sig(2)])
    assert torch.allclose(probabilities(torch.tensor([2.0, -1.0]), "binary"), p)


def test_probabilities_multiclass():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))  # softmax gives these back
    p = probabilities(logits, "multiclass")[0].tolist()
    assert p == pytest.approx([0.3 + 0.4, 0.2 + 0.4, 0.1, 0.9], rel=1e-6)


@pytest.mark.parametrize(("task", "n"), [("binary", 1), ("multilabel", 2), ("multiclass", 4)])
def test_probabilities_are_consistent(task, n):
    torch.manual_seed(0)
    p = probabilities(torch.randn(50, n) * 5, task)
    assert ((p >= 0) & (p <= 1)).all()
    assert torch.allclose(p[:, 2] + p[:, 3], torch.ones(50))
    # A defect is at least as likely as either kind of error.
    assert (p[:, 3] >= p[:, :2].max(dim=1).values - 1e-6).all()


def test_probabilities_unknown_task():
    with pytest.raises(ValueError):
        probabilities(torch.zeros(1, 2), "regression")


def test_targets_to_truth():
    truth = targets_to_truth(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))
    assert truth.tolist() == [[0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 0, 1]]


def _example(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n, 2))
    targets[rng.random(n) < 0.4] = 0  # plenty of good erasers, as in the real data
    truth = targets_to_truth(targets)
    probs = np.clip(truth * 0.3 + rng.random((n, 4)) * 0.7, 0, 1)
    return probs, targets


def test_evaluate_matches_sklearn():
    probs, targets = _example()
    truth = targets_to_truth(targets)
    thresholds = {"print_error": 0.4, "physical_error": 0.5, "no_defect": 0.6, "defect": 0.45}
    m = evaluate(probs, targets, thresholds)
    for i, name in enumerate(PROB_NAMES):
        y, s = truth[:, i], probs[:, i]
        pred = s >= thresholds[name]
        assert m[f"{name}_ap"] == pytest.approx(average_precision_score(y, s))
        assert m[f"{name}_auroc"] == pytest.approx(roc_auc_score(y, s))
        assert m[f"{name}_f1"] == pytest.approx(f1_score(y, pred))
        assert m[f"{name}_precision"] == pytest.approx(precision_score(y, pred))
        assert m[f"{name}_recall"] == pytest.approx(recall_score(y, pred))
        assert m[f"{name}_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m[f"threshold_{name}"] == thresholds[name]
    assert m["graded_ap"] == pytest.approx(np.mean([m[f"{n}_ap"] for n in GRADED]))
    assert m["graded_f1"] == pytest.approx(np.mean([m[f"{n}_f1"] for n in GRADED]))
    assert all(type(v) is float for v in m.values())
    for key in ("defect_ap", "defect_auroc", "defect_f1", "defect_precision", "defect_recall"):
        assert key in m


def test_evaluate_chooses_thresholds_when_none_given():
    probs, targets = _example(seed=3)
    policy = ThresholdPolicy("min_recall", 0.9)
    m = evaluate(probs, targets, policy=policy)
    chosen = choose_thresholds(probs, targets, policy)
    assert {k: m[f"threshold_{k}"] for k in PROB_NAMES} == chosen
    assert m["defect_recall"] >= 0.9
    # torch input is accepted too
    assert evaluate(torch.from_numpy(probs), targets, chosen)["graded_ap"] == m["graded_ap"]


def _brute_force(y, s):
    """(threshold, f1, precision, recall) for every cut point ``s >= u``."""
    rows = []
    for u in np.unique(s):
        pred = s >= u
        rows.append(
            (
                u,
                f1_score(y, pred),
                precision_score(y, pred, zero_division=0),
                recall_score(y, pred),
            )
        )
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_f1_threshold_is_best_cut_point(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(y * 0.2 + rng.random(60), 2)  # rounding creates ties
    thr = choose_threshold(y, s)
    best = max(f1 for _, f1, _, _ in _brute_force(y, s))
    assert f1_score(y, s >= thr) == pytest.approx(best)


@pytest.mark.parametrize("min_recall", [0.5, 0.8, 0.95, 1.0])
def test_min_recall_threshold(min_recall):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 80)
    s = y * 0.3 + rng.random(80)
    thr = choose_threshold(y, s, ThresholdPolicy("min_recall", min_recall))
    assert recall_score(y, s >= thr) >= min_recall
    feasible = [p for _, _, p, r in _brute_force(y, s) if r >= min_recall]
    assert precision_score(y, s >= thr) == pytest.approx(max(feasible))


def test_threshold_without_positives_falls_back():
    assert choose_threshold(np.zeros(5), np.linspace(0, 1, 5)) == DEFAULT_THRESHOLD


def test_absent_class_gives_nan_without_warnings():
    probs, targets = _example(seed=5)
    targets[:, 0] = 0  # no print errors at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate(probs, targets)
    assert math.isnan(m["print_error_ap"])
    assert math.isnan(m["print_error_auroc"])
    assert math.isnan(m["print_error_f1"])
    assert not math.isnan(m["physical_error_ap"])
    # graded_ap averages the classes that are defined
    assert m["graded_ap"] == pytest.approx((m["physical_error_ap"] + m["no_defect_ap"]) / 2)


def test_all_good_gives_nan_not_exception():
    probs = np.full((4, 4), 0.2)
    m = evaluate(probs, np.zeros((4, 2)))
    assert math.isnan(m["defect_ap"]) and math.isnan(m["defect_balanced_accuracy"])
    assert not math.isnan(m["no_defect_ap"])  # every eraser is a positive for no_defect
    assert math.isnan(evaluate(np.zeros((0, 4)), np.zeros((0, 2)))["graded_ap"])


def test_threshold_policy_validation_and_round_trip():
    p = ThresholdPolicy("min_recall", 0.9)
    assert ThresholdPolicy.from_dict(p.to_dict()) == p
    assert ThresholdPolicy().to_dict() == {"kind": "max_f1", "min_recall": None}
    for bad in (
        {"kind": "youden"},
        {"kind": "min_recall"},
        {"kind": "min_recall", "min_recall": 0},
        {"kind": "max_f1", "min_recall": 0.5},
    ):
        with pytest.raises(ValueError):
            ThresholdPolicy(**bad)
    with pytest.raises(ValueError, match="unknown"):
        ThresholdPolicy.from_dict({"kind": "max_f1", "extra": 1})


def test_confusion():
    c = confusion([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert c.tolist() == [[1, 1], [1, 2]]
    assert confusion([0, 0], [0, 0]).tolist() == [[2, 0], [0, 0]]


@pytest.mark.parametrize("n", [5, 37, 200])
def test_fast_score_equals_evaluate(n):
    rng = np.random.default_rng(n)
    probs = np.round(rng.uniform(size=(n, 4)), 2)  # ties, as real probabilities have
    targets = rng.integers(0, 2, size=(n, 2))
    full = evaluate(probs, targets)
    for metric in SCORES:
        assert score(probs, targets, metric) == pytest.approx(full[metric], abs=1e-12)
    with pytest.raises(ValueError, match="not one of"):
        score(probs, targets, "accuracy")
