"""What a delivery's labels can teach: how many erasers show each graded kind.

A model learns to grade only what it has seen. Labels in which no eraser is defective (every
row ``0_0``) would train a whole study on nothing and ship a model whose scores are noise; a
training part with a handful of print errors ships a model whose print score is a guess.
:func:`assess` says which kinds cannot be learnt: when nothing can, that is an error; when
the other kind still can, the model is trained and every place that shows it says which kind
it cannot grade (the run's warning, the study, the model card).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.errors import Problem, error, warning
from data.labels import MULTICLASS

MIN_TO_LEARN = 5
"""Erasers of a kind the training part must hold before a model can learn to grade it."""

KIND_WORDS = {"print_error": "print errors", "physical_error": "physical defects",
              "defect": "defective erasers", "no_defect": "erasers labelled good"}


def kind_counts(targets: np.ndarray, label_kind: str) -> dict[str, int]:
    """Erasers per graded kind in ``(n, 2)`` [print, physical] targets (both columns hold the
    defect flag for binary labels, where print and physical cannot be told apart)."""
    t = np.asarray(targets).reshape(-1, 2)
    defect = int(t.max(axis=1).sum()) if len(t) else 0
    counts = {"defect": defect, "no_defect": len(t) - defect}
    if label_kind == MULTICLASS:
        counts["print_error"] = int(t[:, 0].sum())
        counts["physical_error"] = int(t[:, 1].sum())
    return counts


@dataclass(frozen=True)
class Teachable:
    """What ``where`` (the labels, the training part) can teach a model."""

    where: str
    counts: dict[str, int]
    minimum: int
    errors: tuple[str, ...]  # nothing to learn: train nothing
    ungradable: tuple[str, ...]  # kinds too rare to learn while the others can be

    @property
    def ok(self) -> bool:
        return not self.errors

    def warnings(self) -> list[str]:
        """One sentence per kind the shipped model cannot grade."""
        verb = "hold" if self.where.endswith("s") else "holds"
        return [f"{self.where} {verb} "
                + (f"only {self.counts[k]} {KIND_WORDS[k]} (fewer than {self.minimum})"
                   if self.counts[k] else f"no {KIND_WORDS[k]}")
                + f": the model cannot learn to grade {KIND_WORDS[k]}, and its {k} probability "
                "is not a learnt score. Label more of them for a model that grades them."
                for k in self.ungradable]


def assess(targets: np.ndarray, label_kind: str, *, minimum: int = MIN_TO_LEARN,
           where: str = "the training part") -> Teachable:
    """Which graded kinds ``targets`` hold too few examples of (fewer than ``minimum``).

    Too few defective or too few good erasers is an error (there is no contrast to learn);
    with multi-class labels, too few of one defect kind is a warning when the other kind can
    be learnt, and an error when neither can.
    """
    counts = kind_counts(targets, label_kind)
    verb = "hold" if where.endswith("s") else "holds"
    errors = []
    for kind in ("defect", "no_defect"):
        if counts[kind] < minimum:
            errors.append(f"{where} {verb} {counts[kind]} {KIND_WORDS[kind]} of "
                          f"{sum(counts[k] for k in ('defect', 'no_defect'))}: a model needs at "
                          f"least {minimum} defective and {minimum} good erasers to learn "
                          "anything. Check the label CSV (its second column: 0/1, or X_Y with "
                          "X = print error and Y = physical defect).")
    kinds = ("print_error", "physical_error") if label_kind == MULTICLASS else ()
    rare = tuple(k for k in kinds if counts[k] < minimum)
    if not errors and kinds and len(rare) == len(kinds):
        shown = " and ".join(f"{counts[k]} {KIND_WORDS[k]}" for k in kinds)
        errors.append(f"{where} {verb} only {shown}: fewer than {minimum} of either, so a "
                      "model can learn to grade neither kind. Label more defective erasers.")
    return Teachable(where, counts, minimum, tuple(errors), () if errors else rare)


def label_problems(targets: np.ndarray, label_kind: str, where: str) -> list[Problem]:
    """What ``check_data.py`` says of a delivery's labels: an error when they hold no
    defective or no good eraser at all, a warning per defect kind they hold none of
    (``where`` names the label files)."""
    teach = assess(targets, label_kind, minimum=1, where="the labels")
    return ([error("nothing-to-learn", where, e) for e in teach.errors]
            + [warning("kind-absent", where, w) for w in teach.warnings()])
