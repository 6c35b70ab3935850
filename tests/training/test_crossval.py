"""k-fold cross-validation of one configuration (training.crossval)."""

from __future__ import annotations

import numpy as np
import pytest

from data import AugmentConfig
from model import CNNConfig
from training.config import RunConfig, TrainConfig
from training.crossval import CrossVal, out_of_fold_probs

CONFIG = RunConfig(
    CNNConfig(input_size=32, widths=(8, 16), kernel_sizes=(3, 3), convs_per_block=1,
              dense_width=0, task="multilabel"),
    TrainConfig(epochs=1, batch_size=16, early_stop_patience=0),
    AugmentConfig.none())


@pytest.fixture(scope="module")
def cv(synthetic_set):
    epochs = []
    result = out_of_fold_probs(CONFIG, synthetic_set, folds=2, seed=0,
                               on_epoch=lambda f, r: epochs.append((f, r.epoch)))
    return result, epochs


def test_every_eraser_gets_out_of_fold_probabilities(cv, synthetic_set):
    result, _ = cv
    n = len(synthetic_set)
    assert isinstance(result, CrossVal)
    assert result.probs.shape == (n, 4) and np.isfinite(result.probs).all()
    assert ((result.probs >= 0) & (result.probs <= 1)).all()
    assert sorted(set(result.fold.tolist())) == [0, 1]  # every eraser held out exactly once
    assert result.seconds > 0


def test_fold_scores_and_epoch_callback(cv, synthetic_set):
    result, epochs = cv
    assert [s["fold"] for s in result.fold_scores] == [0, 1]
    assert sum(s["n_val"] for s in result.fold_scores) == len(synthetic_set)
    for s in result.fold_scores:
        assert s["n_val"] == int((result.fold == s["fold"]).sum())
        assert s["best_epoch"] == 1 and s["epochs_run"] == 1
        assert {"graded_ap", "defect_ap", "graded_f1"} <= set(s)
    assert epochs == [(0, 1), (1, 1)]


def test_the_folds_are_stratified_on_the_class_codes(cv, synthetic_set):
    result, _ = cv
    codes = np.array(synthetic_set.codes)
    for code in set(codes.tolist()):
        per_fold = [int(((result.fold == f) & (codes == code)).sum()) for f in (0, 1)]
        assert abs(per_fold[0] - per_fold[1]) <= 1, (code, per_fold)
