"""k-fold cross-validation of one configuration: out-of-fold probabilities for every eraser,
each from a model that never saw its label (what confident learning needs)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from data import EraserSet, make_split
from data.pipeline import TrainData
from model import PROB_NAMES
from training.config import RunConfig
from training.loop import EpochReport, train

log = logging.getLogger(__name__)


@dataclass
class CrossVal:
    """Out-of-fold probabilities for every eraser and how each fold's model scored."""

    probs: np.ndarray  # (N, 4) in model.PROB_NAMES order, data.ids order
    fold: np.ndarray  # fold each eraser was held out in
    fold_scores: list[dict]
    seconds: float


def out_of_fold_probs(config: RunConfig, data: EraserSet, *, folds: int = 5, seed: int = 0,
                      device: str | torch.device = "cpu", flagged: tuple[str, ...] = (),
                      on_epoch: Callable[[int, EpochReport], None] | None = None) -> CrossVal:
    """Train ``config`` on ``folds - 1`` folds at a time; predict the held-out fold.

    The folds are stratified on ``X_Y`` (``data.make_split``). Each fold's probabilities come
    from its best epoch, chosen on that fold's (noisy) labels like any trial's. ``on_epoch``
    gets ``(fold, EpochReport)``.
    """
    split = make_split(data.ids, data.codes, k=folds, seed=seed)
    images = torch.as_tensor(data.images(config.model.input_size))
    row = {k: i for i, k in enumerate(data.ids)}
    probs = np.full((len(data.ids), len(PROB_NAMES)), np.nan, dtype=np.float64)
    fold_of = np.full(len(data.ids), -1, dtype=np.int64)
    scores, seconds = [], 0.0
    for f in range(folds):
        td = TrainData(images, data.targets, data.ids, train_ids=split.train_ids(f),
                       val_ids=split.val_ids(f), flagged=flagged)
        callback = None if on_epoch is None else (lambda r, f=f: on_epoch(f, r))
        result = train(config, td, device=device, callback=callback)
        rows = np.array([row[k] for k in result.val_ids], dtype=np.int64)
        probs[rows] = result.val_probs
        fold_of[rows] = f
        seconds += result.seconds
        scores.append({"fold": f, "n_val": len(rows), "best_epoch": result.best_epoch,
                       "epochs_run": result.epochs_run,
                       **{k: result.metrics.get(k, math.nan)
                          for k in ("graded_ap", "defect_ap", "graded_f1")}})
        log.info("fold %d/%d: %s %.4f", f + 1, folds, config.train.metric, result.score)
    return CrossVal(probs=probs, fold=fold_of, fold_scores=scores, seconds=seconds)
