"""Run an exported model over an :class:`EraserSet` and score it like the graders do."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data import EraserSet
from model import GRADED, PROB_NAMES, InspectionModel, evaluate, predict
from model.ensemble import EnsembleModel, parts

CHUNK = 512  # erasers fetched from the cache at a time: bounded memory on large sets


def predict_set(model: InspectionModel | EnsembleModel, data: EraserSet,
                ids: Sequence[str] | None = None, *, batch_size: int = 128, tta: bool = False,
                device: str | torch.device | None = None) -> np.ndarray:
    """``(N, 4)`` probabilities (``model.PROB_NAMES``) for ``ids`` (default: all erasers).

    Reads the cached copy at the model's input size: the model's own resize is the same
    operation (held together by a test), so this equals feeding the raw 310 px arrays, only
    without decoding and resizing them again. An ensemble's members each read their own size.
    """
    ids = list(data.ids if ids is None else ids)
    if isinstance(model, EnsembleModel):
        return sum(w * predict_set(m, data, ids, batch_size=batch_size, tta=tta, device=device)
                   for m, w in parts(model)).astype(np.float32)
    size = model.cfg.input_size if data.image_size >= model.cfg.input_size else None
    out = np.empty((len(ids), len(PROB_NAMES)), dtype=np.float32)
    for start in range(0, len(ids), CHUNK):
        chunk = data.images(size, ids[start:start + CHUNK]).transpose(0, 2, 3, 1)
        out[start:start + len(chunk)] = predict(model, chunk, batch_size=batch_size, tta=tta,
                                                device=device)
    return out


def graded_table(metrics: dict[str, float]) -> list[tuple[str, float, float]]:
    """(class, AUC-PR, F1) rows for the graded classes and the binary defect score."""
    return [(name, metrics[f"{name}_ap"], metrics[f"{name}_f1"])
            for name in (*GRADED, "defect")]


def score(model: InspectionModel, probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Metrics at the model's stored thresholds (not re-tuned on these data)."""
    return evaluate(probs, targets, thresholds=model.thresholds)
