"""Several trained networks shipped as one model: the weighted mean of their probabilities.

An ensemble is what export builds when averaging the best trials beats the single best on
validation by more than the noise of that split (``search.ensemble``). Each member is a full
:class:`~model.inference.InspectionModel` with its own channels, input size and
normalisation, so members of different architectures mix freely; the ensemble takes the same
raw ``uint8 (B, H, W, 6)`` erasers and gives the same outputs as a single model, which is why
``model.load``, ``model.predict``, ``predict.py``, ONNX and ``.pt2`` treat both alike.

Averaging probabilities (not logits) keeps every head type comparable: each member maps its
head to the four :data:`~model.metrics.PROB_NAMES` probabilities first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .inference import InspectionModel
from .net import describe


class EnsembleModel(nn.Module):
    """Weighted mean of the members' probabilities; ``forward`` as
    :meth:`InspectionModel.forward`. Attributes: ``members``, ``member_weights`` (a buffer
    summing to 1), ``thresholds`` (the ensemble's own, chosen on its validation
    probabilities) and ``meta``."""

    def __init__(self, members: Sequence[InspectionModel], weights: Sequence[float],
                 thresholds: dict[str, float] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
        if w.numel() != len(members):
            raise ValueError(f"{len(members)} members but {w.numel()} weights")
        if not bool((w > 0).all()):
            raise ValueError(f"member weights must be positive, got {w.tolist()}")
        self.members = nn.ModuleList(members)
        self.register_buffer("member_weights", w / w.sum())
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.meta: dict = {}

    @property
    def parts(self) -> list[tuple[InspectionModel, float]]:
        """``(member, weight)`` pairs."""
        return list(zip(self.members, self.member_weights.tolist(), strict=True))

    @property
    def mean(self) -> Tensor:
        """The first member's normalisation buffer: where the ensemble lives (its device)."""
        return self.members[0].mean

    def probs(self, x_raw: Tensor) -> Tensor:
        """``(B, 4)`` probabilities in :data:`~model.metrics.PROB_NAMES` order."""
        out = self.member_weights[0] * self.members[0].probs(x_raw)
        for i in range(1, len(self.members)):
            out = out + self.member_weights[i] * self.members[i].probs(x_raw)
        return out

    def forward(self, x_raw: Tensor) -> tuple[Tensor, Tensor]:
        """``(class_probs (B, 3) in GRADED order, defect_prob (B,))`` for raw images."""
        p = self.probs(x_raw)
        return p[:, :3], p[:, 3]


def parts(model: InspectionModel | EnsembleModel) -> list[tuple[InspectionModel, float]]:
    """A model's ``(network, weight)`` pairs: one pair with weight 1 for a single model."""
    return model.parts if isinstance(model, EnsembleModel) else [(model, 1.0)]


def summary(model: InspectionModel | EnsembleModel) -> str:
    """One line: the architecture, or ``ensemble of K: w x arch; ...``."""
    if not isinstance(model, EnsembleModel):
        return describe(model.cfg)
    return f"ensemble of {len(model.members)}: " + "; ".join(
        f"{w:.2f} x {describe(m.cfg)}" for m, w in model.parts)
