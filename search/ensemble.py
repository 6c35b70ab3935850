"""Ensemble selection at export: does averaging the best trials beat the single best?

Caruana et al.'s ensemble selection (ICML 2004), the one AutoGluon ships by default: from a
pool of the study's best trials, greedily add (with replacement) the trial whose addition
most improves the averaged validation probabilities' score; the bag's counts become the
members' weights.

A greedy search scored on the erasers it was chosen on flatters itself, and a validation
split of a few hundred erasers is noisy. So the gain that decides is cross-fitted: the
validation erasers are split into folds, a bag is chosen without each fold and scores it, and
the pooled out-of-fold predictions are compared with the single best trial on the same
erasers. The ensemble ships only when that gain exceeds its noise, the standard deviation of
the paired difference over bootstrap resamples (:func:`choose_ensemble`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.model_selection import StratifiedKFold

from model.metrics import score as metric_score

log = logging.getLogger(__name__)

DEFAULT_POOL = 8  # the top trials the selection draws from (export_best.py --ensemble)
ROUNDS = 20  # greedy additions; with a pool of 8 the bags stop improving well before this
FOLDS = 5  # cross-fitting of the gain
BOOTSTRAP = 200  # resamples of the validation erasers for the noise of the gain
SEED = 0

Scorer = Callable[[np.ndarray, np.ndarray], float]  # (probs (N, 4), targets (N, 2)) -> score


@dataclass(frozen=True)
class EnsembleChoice:
    """What the selection found: ``members`` (indices into the pool, most weight first) with
    ``weights`` summing to 1; the bag's validation score (``score``, chosen on the same
    erasers), its cross-fitted score (``honest``), the single best's, the noise of the gain,
    and whether the ensemble ships."""

    members: tuple[int, ...]
    weights: tuple[float, ...]
    score: float
    honest: float
    single: float
    noise: float
    pool: int

    @property
    def gain(self) -> float:
        """The cross-fitted gain over the single best trial."""
        return self.honest - self.single

    @property
    def chosen(self) -> bool:
        """Ships: more than one member, and a cross-fitted gain above its noise."""
        return len(self.members) > 1 and self.gain > self.noise

    def describe(self, metric: str) -> str:
        """One line for the terminal and the model card."""
        if len(self.members) == 1:
            return (f"no blend of the {self.pool} best trials beats the single best on "
                    f"validation ({metric} {self.single:.4f}); it ships alone")
        verdict = "ships" if self.chosen else "not shipped: the gain is within the noise"
        return (f"{len(self.members)} of the {self.pool} best trials: {metric} "
                f"{self.score:.4f} on validation, {self.honest:.4f} cross-fitted, vs "
                f"{self.single:.4f} for the single best (gain {self.gain:+.4f}, noise "
                f"{self.noise:.4f}); {verdict}")


def caruana(probs: Sequence[np.ndarray], targets: np.ndarray, score: Scorer,
            rounds: int = ROUNDS) -> tuple[Counter[int], float]:
    """Greedy ensemble selection with replacement, started from ``probs[0]`` (the single
    best trial, the one that would ship alone).

    ``probs``: each pool model's ``(N, 4)`` validation probabilities. Returns the bag (pool
    index -> count) of the best round and its score; a later round that scores no better
    never replaces an earlier one, so the bag is as small as its score allows.
    """
    bag: Counter[int] = Counter({0: 1})
    total = np.asarray(probs[0], dtype=np.float64)
    best_bag, best = Counter(bag), score(total, targets)
    for _ in range(rounds):
        n = sum(bag.values())
        scores = [score((total + p) / (n + 1), targets) for p in probs]
        pick = int(np.nanargmax(scores))
        bag[pick] += 1
        total = total + probs[pick]
        if scores[pick] > best + 1e-12:
            best_bag, best = Counter(bag), scores[pick]
    return best_bag, float(best)


def blend(probs: Sequence[np.ndarray], members: Sequence[int],
          weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' probabilities, as :class:`model.EnsembleModel`."""
    return sum(w * np.asarray(probs[i], dtype=np.float64)
               for i, w in zip(members, weights, strict=True))


def _weights(bag: Counter[int]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    total = sum(bag.values())
    members = tuple(sorted(bag, key=lambda i: (-bag[i], i)))
    return members, tuple(bag[i] / total for i in members)


def cross_fitted(probs: Sequence[np.ndarray], targets: np.ndarray, score: Scorer,
                 rounds: int = ROUNDS, folds: int = FOLDS, seed: int = SEED
                 ) -> np.ndarray | None:
    """Each eraser's probabilities from a bag chosen without its fold; None when the split
    has too few defective or good erasers to fold."""
    defect = np.asarray(targets).max(axis=1)
    n_splits = min(folds, int(defect.sum()), int((1 - defect).sum()))
    if n_splits < 2:
        return None
    out = np.empty_like(np.asarray(probs[0], dtype=np.float64))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit, held in cv.split(defect, defect):
        bag, _ = caruana([p[fit] for p in probs], targets[fit], score, rounds)
        members, weights = _weights(bag)
        out[held] = blend([p[held] for p in probs], members, weights)
    return out


def gain_noise(ensemble: np.ndarray, single: np.ndarray, targets: np.ndarray, score: Scorer,
               n: int = BOOTSTRAP, seed: int = SEED) -> float:
    """Standard deviation of ``score(ensemble) - score(single)`` over ``n`` bootstrap
    resamples of the validation erasers (paired: both scored on the same resample)."""
    rng = np.random.default_rng(seed)
    rows = len(targets)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, rows, rows)
        d = score(ensemble[idx], targets[idx]) - score(single[idx], targets[idx])
        if math.isfinite(d):  # a resample without any eraser of a class leaves it undefined
            diffs.append(d)
    return float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.inf


def choose_ensemble(probs: Sequence[np.ndarray], targets: np.ndarray, metric: str, *,
                    rounds: int = ROUNDS, folds: int = FOLDS,
                    bootstrap: int = BOOTSTRAP) -> EnsembleChoice:
    """Select an ensemble from the pool's validation ``probs`` (the single best trial first,
    then the next best) on the study's ``metric`` (:data:`model.metrics.SCORES`), and measure
    whether its cross-fitted gain over the single best is above noise."""
    if not probs:
        raise ValueError("choose_ensemble needs at least one model's probabilities")
    targets = np.asarray(targets)
    score = partial(metric_score, metric=metric)
    single = score(probs[0], targets)
    bag, bag_score = caruana(probs, targets, score, rounds)
    members, weights = _weights(bag)
    honest, noise = single, 0.0
    if len(members) > 1:
        oof = cross_fitted(probs, targets, score, rounds, folds)
        if oof is None:
            honest, noise = math.nan, math.inf
        else:
            honest = score(oof, targets)
            noise = gain_noise(oof, np.asarray(probs[0], np.float64), targets, score,
                               bootstrap)
    log.info("ensemble selection: bag %s, %s %.4f (cross-fitted %.4f) vs single %.4f, "
             "noise %.4f", dict(bag), metric, bag_score, honest, single, noise)
    return EnsembleChoice(members=members, weights=weights, score=bag_score, honest=honest,
                          single=single, noise=noise, pool=len(probs))
