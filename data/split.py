"""Train/validation splits that every trial and every export share.

One mechanism serves both uses: the erasers are dealt into ``k`` stratified folds (on the
``X_Y`` class, optionally keeping the erasers of one pack together) and fold 0 is the
validation set of the hold-out split, so ``val_fraction = 1 / k``. The folds are saved by id,
and their hash identifies the split in studies and exported models.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold


class SplitError(ValueError):
    """The split cannot be made as asked (message is user-facing)."""


@dataclass(frozen=True)
class Split:
    """Validation ids per fold; fold ``f``'s training set is every other fold.

    ``test`` holds the erasers set aside before the folds were dealt: no fold, no training
    run, no threshold and no epoch choice ever sees them, so they give an unbiased score of
    the model a study finally ships.
    """

    folds: tuple[tuple[str, ...], ...]
    seed: int
    group_regex: str | None = None
    stratified_on: str = "X_Y"
    test: tuple[str, ...] = ()

    @property
    def k(self) -> int:
        return len(self.folds)

    def val_ids(self, fold: int = 0) -> list[str]:
        return list(self.folds[fold])

    def train_ids(self, fold: int = 0) -> list[str]:
        return sorted(k for i, f in enumerate(self.folds) if i != fold for k in f)

    def test_ids(self) -> list[str]:
        return list(self.test)

    @property
    def hash(self) -> str:
        parts = [sorted(f) for f in self.folds]
        # A split without a test part hashes as before test parts existed (older studies).
        payload = json.dumps([*parts, {"test": sorted(self.test)}] if self.test else parts)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["folds"] = [list(f) for f in self.folds]
        d["test"] = list(self.test)
        d["hash"] = self.hash
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        split = cls(folds=tuple(tuple(f) for f in d["folds"]), seed=int(d["seed"]),
                    group_regex=d.get("group_regex"),
                    stratified_on=d.get("stratified_on", "X_Y"),
                    test=tuple(d.get("test", ())))
        if "hash" in d and d["hash"] != split.hash:
            raise SplitError("the saved split's hash does not match its folds; it was edited.")
        return split

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        return cls.from_dict(json.loads(Path(path).read_text()))


def groups_from_regex(ids: list[str], group_regex: str) -> list[str]:
    """Pack of each eraser: the regex's first group (or whole match) on its id."""
    try:
        pattern = re.compile(group_regex)
    except re.error as exc:
        raise SplitError(f"--group-regex {group_regex!r} is not a valid regular expression "
                         f"({exc}).") from None
    groups = []
    for k in ids:
        m = pattern.search(k)
        if m is None:
            raise SplitError(f"--group-regex {group_regex!r} does not match id {k!r}; every id "
                             "must name its pack (e.g. '^(P\\d+)_' for ids like P0042_E07).")
        groups.append(m.group(1) if m.groups() else m.group(0))
    return groups


def k_for_fraction(val_fraction: float) -> int:
    if not 0.0 < val_fraction < 1.0:
        raise SplitError(f"validation fraction {val_fraction} must be between 0 and 1.")
    return max(2, round(1.0 / val_fraction))


def make_split(ids: list[str], classes: list[str], *, k: int = 5, seed: int = 0,
               group_regex: str | None = None, test_fraction: float = 0.0) -> Split:
    """Deal ``ids`` into ``k`` folds stratified on ``classes`` (the ``X_Y`` codes), after
    setting ``test_fraction`` of them aside as a test part (stratified the same way).

    Classes too rare to appear in every fold are still spread as evenly as possible
    (scikit-learn warns, we don't); with a ``group_regex`` erasers of one pack never straddle
    folds, nor the test part and the folds.
    """
    if len(ids) != len(classes):
        raise ValueError("ids and classes differ in length")
    if not 0.0 <= test_fraction < 0.5:
        raise SplitError(f"test fraction {test_fraction} must be at least 0 and below 0.5.")
    order = np.argsort(ids)  # independent of the order the caller happens to pass
    ids = [ids[i] for i in order]
    y = np.array([classes[i] for i in order])
    test: tuple[str, ...] = ()
    if test_fraction > 0:
        n_parts = max(2, round(1.0 / test_fraction))
        if len(ids) < n_parts * k:
            raise SplitError(f"{len(ids)} erasers are too few to set {test_fraction:.0%} aside "
                             f"for testing and still make {k} folds; use --test-fraction 0 or "
                             "label more erasers.")
        held, _ = _deal(ids, y, n_parts, seed, group_regex)
        test = held[0]
        kept_set = set(test)
        keep = np.array([i not in kept_set for i in ids])
        ids, y = [i for i, kept in zip(ids, keep, strict=True) if kept], y[keep]
    if len(ids) < k:
        raise SplitError(f"{len(ids)} erasers cannot be split into {k} folds; label more "
                         "erasers or use a larger validation fraction.")
    folds, stratified_on = _deal(ids, y, k, seed, group_regex)
    return Split(folds=folds, seed=seed, group_regex=group_regex, stratified_on=stratified_on,
                 test=test)


def _deal(ids: list[str], y: np.ndarray, k: int, seed: int, group_regex: str | None
          ) -> tuple[tuple[tuple[str, ...], ...], str]:
    """``k`` folds of sorted ``ids``, stratified on ``y`` (and grouped by pack)."""
    x = np.zeros(len(ids))
    stratified_on = "X_Y"
    if max(Counter(y.tolist()).values()) == len(y):
        stratified_on = "none (one class)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if group_regex:
            groups = groups_from_regex(ids, group_regex)
            if len(set(groups)) < k:
                raise SplitError(f"--group-regex {group_regex!r} finds {len(set(groups))} "
                                 f"pack(s), fewer than the {k} parts needed.")
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = splitter.split(x, y, groups)
        elif stratified_on == "X_Y":
            counts = Counter(y.tolist())
            if max(counts.values()) < k:  # scikit-learn's n_splits error, said plainly
                shown = ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()))
                raise SplitError(
                    f"{len(ids)} erasers are too few to deal into {k} stratified parts: every "
                    f"X_Y class has fewer than {k} erasers ({shown}). Label more erasers, or "
                    "use a larger --val-fraction (and --test-fraction 0).")
            parts = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
        else:
            parts = KFold(n_splits=k, shuffle=True, random_state=seed).split(x)
        folds = tuple(tuple(sorted(ids[i] for i in val)) for _, val in parts)
    return folds, stratified_on
