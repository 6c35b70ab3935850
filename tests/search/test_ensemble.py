"""Ensemble selection (search.ensemble): greedy, with replacement, and shipped only when its
gain over the single best is above the noise of the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from model import targets_to_truth
from model.metrics import score
from search.ensemble import blend, caruana, choose_ensemble, cross_fitted, gain_noise


def views(n: int = 300, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Targets and three models: the first two each see one defect kind well and guess the
    other; the third is the first again with a little noise."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n, 2))
    truth = targets_to_truth(targets).astype(float)

    def model(sharp: np.ndarray) -> np.ndarray:
        noise = rng.uniform(0, 1, size=truth.shape)
        return np.clip(np.where(sharp, 0.6 * truth + 0.4 * noise, noise), 0, 1)

    print_only = model(np.array([True, False, True, True]))
    physical_only = model(np.array([False, True, True, True]))
    twin = np.clip(print_only + rng.normal(0, 0.01, truth.shape), 0, 1)
    return [print_only, physical_only, twin], targets


def test_complementary_models_make_an_ensemble_that_ships():
    probs, targets = views()
    choice = choose_ensemble(probs, targets, "graded_ap")
    assert set(choice.members) >= {0, 1}
    assert sum(choice.weights) == pytest.approx(1.0)
    assert choice.score > choice.single + 0.05 and choice.chosen
    assert choice.score == pytest.approx(score(blend(probs, choice.members, choice.weights),
                                               targets))
    assert choice.honest <= choice.score + 1e-9  # chosen without the erasers it scores
    assert "ships" in choice.describe("graded_ap")


def test_copies_of_one_model_do_not_ship():
    probs, targets = views()
    choice = choose_ensemble([probs[0], probs[0].copy()], targets, "graded_ap")
    assert not choice.chosen and choice.gain == pytest.approx(0.0, abs=1e-9)


def test_the_bag_starts_from_the_first_model_and_never_gets_worse():
    probs, targets = views(seed=1)
    bag, best = caruana(probs, targets, lambda p, t: score(p, t, "defect_ap"), rounds=6)
    assert bag[0] >= 1 and best >= score(probs[0], targets, "defect_ap")


def test_a_gain_within_the_noise_is_not_shipped():
    probs, targets = views(n=40, seed=2)
    # a slightly perturbed copy: any gain is luck on 40 erasers
    rng = np.random.default_rng(3)
    other = np.clip(probs[0] + rng.normal(0, 0.05, probs[0].shape), 0, 1)
    choice = choose_ensemble([probs[0], other], targets, "graded_ap")
    assert not choice.chosen
    assert len(choice.members) == 1 or choice.score > choice.single  # it looked better


def test_each_eraser_is_scored_by_a_bag_chosen_without_it():
    probs, targets = views(n=60)
    oof = cross_fitted(probs, targets, score, folds=3)
    assert oof.shape == probs[0].shape and np.isfinite(oof).all()
    # too few defective erasers to fold: no cross-fitted estimate, so nothing ships
    few = np.zeros_like(targets)
    few[0] = 1
    assert cross_fitted(probs, few, score) is None
    assert not choose_ensemble(probs, few, "graded_ap").chosen


def test_gain_noise_is_zero_for_identical_predictions_and_positive_otherwise():
    probs, targets = views()
    assert gain_noise(probs[0], probs[0], targets, score, n=20) == 0.0
    assert gain_noise(probs[1], probs[0], targets, score, n=20) > 0.0
