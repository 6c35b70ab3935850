"""Probabilities from any head, decision thresholds, and the evaluation metrics.

Every head is mapped to the same four probabilities (:data:`PROB_NAMES`), so thresholds,
metrics, the exported model and ``predict.py`` never depend on the head type. The grade is
AUC-PR and F1 per class one-vs-all over :data:`GRADED`; ``graded_ap`` is the study objective.

Decision rule everywhere: predict positive when ``prob >= threshold`` (sklearn's convention
for the thresholds ``precision_recall_curve`` returns).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torch import Tensor

PROB_NAMES: tuple[str, ...] = ("print_error", "physical_error", "no_defect", "defect")
GRADED: tuple[str, ...] = ("print_error", "physical_error", "no_defect")
THRESHOLD_KINDS: tuple[str, ...] = ("max_f1", "min_recall")
DEFAULT_THRESHOLD = 0.5
"""Used when a threshold cannot be chosen (the data hold no positive of that class)."""


def probabilities(logits: Tensor, task: str) -> Tensor:
    """``(N, 4)`` probabilities in :data:`PROB_NAMES` order from a head's logits.

    - multilabel: ``p_print = sigmoid(z0)``, ``p_phys = sigmoid(z1)``, treated as independent:
      ``no_defect = (1 - p_print)(1 - p_phys)``, ``defect = 1 - no_defect``.
    - binary: ``defect = sigmoid(z)``; print and physical are both set to ``p_defect``
      because a binary head cannot tell them apart (their per-class scores are then only as
      good as the defect score).
    - multiclass: softmax over (0_0, 0_1, 1_0, 1_1); ``print = p10 + p11``,
      ``physical = p01 + p11``, ``no_defect = p00``, ``defect = 1 - p00``.

    Pure tensor ops without data-dependent control flow, so it traces for ONNX.
    """
    z = logits.float()
    if task == "multilabel":
        p = torch.sigmoid(z)
        # sigmoid(-z) rather than 1 - sigmoid(z): exact for confident "good" predictions.
        no_defect = torch.sigmoid(-z[:, 0]) * torch.sigmoid(-z[:, 1])
        return torch.stack([p[:, 0], p[:, 1], no_defect, 1 - no_defect], dim=1)
    if task == "binary":
        p = torch.sigmoid(z.reshape(z.shape[0]))
        return torch.stack([p, p, torch.sigmoid(-z.reshape(z.shape[0])), p], dim=1)
    if task == "multiclass":
        p = torch.softmax(z, dim=1)
        return torch.stack([p[:, 2] + p[:, 3], p[:, 1] + p[:, 3], p[:, 0], 1 - p[:, 0]], dim=1)
    raise ValueError(f"unknown task {task!r}")


def targets_to_truth(targets: np.ndarray) -> np.ndarray:
    """``(N, 2)`` [print, physical] -> ``(N, 4)`` 0/1 truth in :data:`PROB_NAMES` order."""
    t = np.asarray(targets)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(
            f"targets must have shape (N, 2) with columns [print, physical], got {t.shape}"
        )
    t = np.rint(t).astype(np.int64)
    defect = t.max(axis=1)
    return np.stack([t[:, 0], t[:, 1], 1 - defect, defect], axis=1)


@dataclass(frozen=True)
class ThresholdPolicy:
    """How a decision threshold is chosen on validation data.

    ``max_f1``: the cut point with the best F1. ``min_recall``: the best precision among cut
    points whose recall is at least ``min_recall`` (ties go to the highest threshold).
    """

    kind: str = "max_f1"
    min_recall: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in THRESHOLD_KINDS:
            raise ValueError(
                f"unknown threshold policy {self.kind!r}; known: {list(THRESHOLD_KINDS)}"
            )
        if self.kind == "min_recall":
            if self.min_recall is None or not 0.0 < float(self.min_recall) <= 1.0:
                raise ValueError(
                    f"threshold policy 'min_recall' needs min_recall in (0, 1], "
                    f"got {self.min_recall!r}"
                )
            object.__setattr__(self, "min_recall", float(self.min_recall))
        elif self.min_recall is not None:
            raise ValueError(
                f"min_recall only applies to the 'min_recall' policy, not {self.kind!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThresholdPolicy:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = sorted(set(d) - {"kind", "min_recall"})
        if unknown:
            raise ValueError(f"ThresholdPolicy.from_dict: unknown key(s) {unknown}")
        return cls(**d)


def choose_threshold(
    y_true: np.ndarray, scores: np.ndarray, policy: ThresholdPolicy = ThresholdPolicy()
) -> float:
    """A threshold for ``scores >= t`` chosen on ``(y_true, scores)`` with ``policy``.

    Candidates are the cut points of sklearn's ``precision_recall_curve``. Returns
    :data:`DEFAULT_THRESHOLD` when ``y_true`` has no positive (nothing to choose from).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or y.sum() == 0:
        return DEFAULT_THRESHOLD
    precision, recall, thresholds = precision_recall_curve(y, s)
    # The last (precision, recall) pair is sklearn's (1, 0) end point with no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if policy.kind == "max_f1":
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thresholds[int(np.argmax(f1))])
    feasible = np.flatnonzero(recall >= policy.min_recall)
    # Recall falls as the threshold rises, so the lowest cut point is always feasible.
    best = feasible[precision[feasible] == precision[feasible].max()]
    return float(thresholds[best.max()])


def choose_thresholds(
    probs: np.ndarray, targets: np.ndarray, policy: ThresholdPolicy = ThresholdPolicy()
) -> dict[str, float]:
    """One threshold per :data:`PROB_NAMES` entry, chosen on ``(probs, targets)``."""
    p = _as_probs(probs)
    truth = targets_to_truth(targets)
    return {
        name: choose_threshold(truth[:, i], p[:, i], policy) for i, name in enumerate(PROB_NAMES)
    }


def _as_probs(probs: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(probs, Tensor):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(PROB_NAMES):
        raise ValueError(
            f"probs must have shape (N, 4) in order {list(PROB_NAMES)}, got {p.shape}"
        )
    return p


def _binary_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    nan = float("nan")
    if y.size == 0:
        return dict.fromkeys(
            ("ap", "auroc", "f1", "precision", "recall", "balanced_accuracy"), nan
        )
    has_pos, has_neg = bool(y.any()), bool((1 - y).any())
    pred = (s >= threshold).astype(np.int64)
    both = has_pos and has_neg
    return {
        # sklearn returns 0.0 (with a warning) for AP without positives; undefined is NaN.
        "ap": float(average_precision_score(y, s)) if has_pos else nan,
        "auroc": float(roc_auc_score(y, s)) if both else nan,
        "f1": float(f1_score(y, pred, zero_division=np.nan)) if has_pos else nan,
        "precision": float(precision_score(y, pred, zero_division=np.nan)),
        "recall": float(recall_score(y, pred, zero_division=np.nan)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else nan,
    }


def evaluate(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: dict[str, float] | None = None,
    policy: ThresholdPolicy = ThresholdPolicy(),
) -> dict[str, float]:
    """All validation metrics as plain floats.

    Per name in :data:`PROB_NAMES`: ``<name>_ap``, ``_auroc``, ``_f1``, ``_precision``,
    ``_recall``, ``_balanced_accuracy`` and ``threshold_<name>``; plus ``graded_ap`` and
    ``graded_f1``, the means over :data:`GRADED` (ignoring classes whose metric is undefined;
    NaN only if all are). ``thresholds`` default to ones chosen on these data with ``policy``.
    Undefined metrics (a class absent) are NaN, never an exception.
    """
    p = _as_probs(probs)
    truth = targets_to_truth(targets)
    if p.shape[0] != truth.shape[0]:
        raise ValueError(f"{p.shape[0]} probability rows for {truth.shape[0]} targets")
    if thresholds is None:
        thresholds = choose_thresholds(p, targets, policy)
    missing = [n for n in PROB_NAMES if n not in thresholds]
    if missing:
        raise ValueError(f"thresholds lack {missing}; need one per {list(PROB_NAMES)}")
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, name in enumerate(PROB_NAMES):
            t = float(thresholds[name])
            for key, value in _binary_metrics(truth[:, i], p[:, i], t).items():
                out[f"{name}_{key}"] = value
            out[f"threshold_{name}"] = t
        for key in ("ap", "f1"):
            values = np.array([out[f"{n}_{key}"] for n in GRADED])
            finite = values[np.isfinite(values)]
            out[f"graded_{key}"] = float(finite.mean()) if finite.size else float("nan")
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts ``[[tn, fp], [fn, tp]]`` (sklearn layout), even if a class is absent."""
    return confusion_matrix(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel(), labels=[0, 1])


SCORES: tuple[str, ...] = ("graded_ap", "defect_ap", "graded_f1")
"""The study metrics :func:`score` computes (what ``run_study.py --metric`` offers)."""


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold, highest first (no end point)."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last row of each tie
    tps = np.cumsum(y)[last]
    return tps / (last + 1), tps / tps[-1]


def score(probs: np.ndarray, targets: np.ndarray, metric: str = "graded_ap") -> float:
    """One study metric (:data:`SCORES`) of ``probs``, equal to :func:`evaluate`'s (F1 at
    the thresholds of the best F1 on these data) but about 100x faster: for loops that score
    thousands of blends and resamples (ensemble selection, bootstrap)."""
    if metric not in SCORES:
        raise ValueError(f"score: metric {metric!r} is not one of {list(SCORES)}")
    p = _as_probs(probs)
    truth = targets_to_truth(targets)
    columns = [PROB_NAMES.index("defect")] if metric == "defect_ap" else range(len(GRADED))
    values = []
    for i in columns:
        y = truth[:, i]
        if y.size == 0 or not y.any():
            continue  # undefined without a positive, as in evaluate
        precision, recall = _curve(y, p[:, i])
        if metric.endswith("_ap"):
            values.append(float(np.sum(np.diff(recall, prepend=0.0) * precision)))
        else:
            denom = precision + recall
            f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom),
                           where=denom > 0)
            values.append(float(f1.max()))
    return float(np.mean(values)) if values else float("nan")
