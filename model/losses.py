"""Training losses for the three head types, all fed the same ``(B, 2)`` targets.

Targets are always a float tensor ``(B, 2)`` with columns ``[print, physical]`` in {0, 1};
each loss converts them to what its head needs (binary: defect = max of the two; multiclass:
class index ``2 * print + physical`` in the order 0_0, 0_1, 1_0, 1_1). That way the training
loop never depends on the head.

Reduction: every loss returns the (sample-weighted) mean over the batch of each sample's loss,
``sum(w_i * l_i) / sum(w_i)``, where ``l_i`` is averaged over a sigmoid head's outputs. A
sample with weight 0 therefore drops out entirely, as if it were not in the batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import N_OUTPUTS, TASKS

SIGMOID_KINDS = ("bce", "focal")
SOFTMAX_KINDS = ("ce", "bce", "focal")  # "bce" = the head's natural loss, i.e. cross-entropy
N_CLASSES = 4


def _check_targets(targets: Tensor) -> None:
    if targets.ndim != 2 or targets.shape[1] != 2:
        raise ValueError(
            f"targets must have shape (B, 2) with columns [print, physical], "
            f"got {tuple(targets.shape)}"
        )


def _weighted_mean(per_sample: Tensor, sample_weight: Tensor | None) -> Tensor:
    if sample_weight is None:
        return per_sample.mean()
    w = sample_weight.to(per_sample.device, per_sample.dtype).reshape(-1)
    if w.shape[0] != per_sample.shape[0]:
        raise ValueError(
            f"sample_weight has {w.shape[0]} entries for a batch of {per_sample.shape[0]}"
        )
    # clamp keeps an all-zero-weight batch at loss 0 instead of 0/0 = NaN.
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)


def _focal_factor(miss: Tensor, gamma: float) -> Tensor:
    """``miss ** gamma`` for ``miss = 1 - p_t`` in [0, 1], safe to differentiate.

    A saturated prediction gives ``miss == 0``, where the derivative of ``x ** gamma`` is
    infinite for gamma < 1 and the chain rule yields ``inf * 0 = NaN`` (seen with torch 2.11).
    The clamp has zero gradient below its floor, and the floor changes the value by < 1e-12.
    """
    return miss.clamp(min=1e-24, max=1.0).pow(gamma)


def class_index(targets: Tensor) -> Tensor:
    """``(B, 2)`` [print, physical] targets -> class index ``2 * print + physical`` (long)."""
    _check_targets(targets)
    t = targets.round().long()
    return 2 * t[:, 0] + t[:, 1]


class SigmoidLoss(nn.Module):
    """BCE or focal loss for the binary (1 logit) and multilabel (2 logits) heads."""

    def __init__(
        self,
        task: str,
        kind: str = "bce",
        *,
        pos_weight: Tensor | None = None,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        neg_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.task = task
        self.kind = kind
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)
        self.neg_smoothing = float(neg_smoothing)
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
            if pos_weight.numel() == 1:
                pos_weight = pos_weight.expand(N_OUTPUTS[task]).clone()
            if pos_weight.numel() != N_OUTPUTS[task]:
                raise ValueError(
                    f"pos_weight has {pos_weight.numel()} entries; the {task} head has "
                    f"{N_OUTPUTS[task]} output(s)"
                )
        # A buffer so that .to(device) moves it with the module.
        self.register_buffer("pos_weight", pos_weight)

    def soft_targets(self, targets: Tensor) -> Tensor:
        """The (smoothed) float targets ``(B, n_outputs)`` the logits are fitted to."""
        _check_targets(targets)
        y = targets.float()
        if self.task == "binary":
            y = y.amax(dim=1, keepdim=True)
        # One-sided first (negatives -> delta, positives stay 1), then the symmetric smoothing
        # y(1 - eps) + eps/2 on top, so either can be used alone with its documented meaning.
        if self.neg_smoothing > 0:
            y = torch.where(y > 0.5, y, torch.full_like(y, self.neg_smoothing))
        if self.label_smoothing > 0:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / 2
        return y

    def forward(
        self, logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        """Scalar loss for logits ``(B, n_outputs)`` (binary also accepts ``(B,)``)."""
        # Losses in float32 even under autocast: bf16 cannot hold a smoothed target like 0.05.
        y = self.soft_targets(targets).to(logits.device)
        z = logits.float().reshape(y.shape)
        # .to() is a no-op once the module was moved; it spares callers a device mismatch.
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(z.device)
        loss = F.binary_cross_entropy_with_logits(z, y, pos_weight=pos_weight, reduction="none")
        if self.kind == "focal":
            # 1 - p_t = p(1 - y) + (1 - p)y, with sigmoid(-z) for 1 - p so it stays exact for
            # confident predictions; see _focal_factor for the clamp.
            miss = torch.sigmoid(z) * (1 - y) + torch.sigmoid(-z) * y
            loss = _focal_factor(miss, self.focal_gamma) * loss
        return _weighted_mean(loss.mean(dim=1), sample_weight)


class SoftmaxLoss(nn.Module):
    """Cross-entropy or focal loss for the multiclass (4 logits) head.

    Per sample ``-sum_k w_k q_k log p_k`` (soft targets ``q``), then the sample-weighted mean:
    unlike ``F.cross_entropy(weight=...)`` it is not divided by the summed class weights,
    which matches how ``pos_weight`` acts on the sigmoid heads.
    """

    def __init__(
        self,
        kind: str = "ce",
        *,
        class_weight: Tensor | None = None,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        neg_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = "ce" if kind == "bce" else kind
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)
        self.neg_smoothing = float(neg_smoothing)
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32).reshape(-1)
            if class_weight.numel() != N_CLASSES:
                raise ValueError(
                    f"class_weight needs {N_CLASSES} entries (0_0, 0_1, 1_0, 1_1), "
                    f"got {class_weight.numel()}"
                )
        self.register_buffer("class_weight", class_weight)

    def soft_targets(self, targets: Tensor) -> Tensor:
        """Target distribution ``(B, 4)`` over (0_0, 0_1, 1_0, 1_1) after smoothing."""
        q = F.one_hot(class_index(targets), N_CLASSES).float()
        if self.neg_smoothing > 0:
            # Samples labelled good (0_0) may hide a defect: move delta of their mass onto the
            # three defect classes; defective labels are trusted as they are.
            d = self.neg_smoothing
            good = torch.tensor([1 - d, d / 3, d / 3, d / 3], device=q.device)
            q = torch.where(q[:, :1] > 0.5, good.expand_as(q), q)
        if self.label_smoothing > 0:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / N_CLASSES
        return q

    def forward(
        self, logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        """Scalar loss for logits ``(B, 4)``."""
        q = self.soft_targets(targets).to(logits.device)
        log_p = F.log_softmax(logits.float(), dim=1)
        terms = -q * log_p
        if self.kind == "focal":
            # Per-class modulating factor; equals the usual (1 - p_t)^gamma for one-hot targets.
            terms = _focal_factor(-torch.expm1(log_p), self.focal_gamma) * terms
        if self.class_weight is not None:
            terms = terms * self.class_weight.to(terms.device)
        return _weighted_mean(terms.sum(dim=1), sample_weight)


def make_loss(
    task: str,
    kind: str = "bce",
    *,
    pos_weight: Tensor | None = None,
    class_weight: Tensor | None = None,
    focal_gamma: float = 2.0,
    label_smoothing: float = 0.0,
    neg_smoothing: float = 0.0,
) -> nn.Module:
    """The loss module for a head; call it as ``loss(logits, targets, sample_weight=None)``.

    ``kind``: ``"bce"`` or ``"focal"`` for sigmoid heads (binary, multilabel); ``"ce"`` (or
    ``"bce"``, meaning the head's natural loss) or ``"focal"`` for multiclass. ``pos_weight``
    only applies to sigmoid heads and ``class_weight`` only to multiclass.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {list(TASKS)}")
    if focal_gamma < 0:
        raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
    for name, value in (("label_smoothing", label_smoothing), ("neg_smoothing", neg_smoothing)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if task == "multiclass":
        if kind not in SOFTMAX_KINDS:
            raise ValueError(f"loss kind {kind!r} is invalid for multiclass; use 'ce' or 'focal'")
        if pos_weight is not None:
            raise ValueError("pos_weight is for sigmoid heads; use class_weight for multiclass")
        return SoftmaxLoss(
            kind,
            class_weight=class_weight,
            focal_gamma=focal_gamma,
            label_smoothing=label_smoothing,
            neg_smoothing=neg_smoothing,
        )
    if kind not in SIGMOID_KINDS:
        raise ValueError(f"loss kind {kind!r} is invalid for {task}; use 'bce' or 'focal'")
    if class_weight is not None:
        raise ValueError(f"class_weight is for the multiclass head; use pos_weight for {task}")
    return SigmoidLoss(
        task,
        kind,
        pos_weight=pos_weight,
        focal_gamma=focal_gamma,
        label_smoothing=label_smoothing,
        neg_smoothing=neg_smoothing,
    )


def _as_targets(targets: np.ndarray) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(
            f"targets must have shape (N, 2) with columns [print, physical], got {t.shape}"
        )
    return np.rint(t).astype(np.int64)


def pos_weight_from_targets(targets: np.ndarray, task: str, factor: float = 1.0) -> Tensor:
    """``n_neg / n_pos`` per sigmoid output, times ``factor`` (1.0 for an output without
    positives or negatives, where there is nothing to balance)."""
    if task not in ("binary", "multilabel"):
        raise ValueError(f"pos_weight is for sigmoid heads (binary, multilabel), not {task!r}")
    t = _as_targets(targets)
    y = t.max(axis=1, keepdims=True) if task == "binary" else t
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    ratio = np.divide(n_neg, n_pos, out=np.ones_like(n_pos), where=(n_pos > 0) & (n_neg > 0))
    return torch.as_tensor(ratio * factor, dtype=torch.float32)


def class_weight_from_targets(targets: np.ndarray, power: float = 1.0) -> Tensor:
    """Multiclass weights ``(1 / frequency) ** power``, normalised to mean 1 over the classes
    present; a class absent from ``targets`` gets weight 0 (nothing to weight, no 1/0)."""
    t = _as_targets(targets)
    if t.shape[0] == 0:
        raise ValueError("class_weight_from_targets needs at least one target")
    counts = np.bincount(2 * t[:, 0] + t[:, 1], minlength=N_CLASSES).astype(np.float64)
    present = counts > 0
    w = np.zeros(N_CLASSES)
    w[present] = (counts.sum() / counts[present]) ** power
    w[present] /= w[present].mean()
    return torch.as_tensor(w, dtype=torch.float32)
