"""The study notices blindness: a defect kind that stays near chance on validation.

A search space can be blind to a defect kind: at 48-64 px a print error's missing stroke is
below what the input shows, and then no setting of regularisation in that space will find it
(a 30-minute study once spent 42 trials there with print AP 0.23 against a chance of 0.18).
:class:`BlindnessWatch` is an Optuna callback: once the first :data:`WARMUP` trials have
finished, a kind whose best validation AUC-PR is still within :data:`LIFT` of chance is
reported in one line (the kind, its AP against chance), and the study's next trials go to what
can see it: the patch family (local features at 224-320 px) with each channel set, where the
study searches it, or else the scratch CNN at the largest input size of its space. Once per
kind and study (a study attribute records it, so several workers act once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from data import EraserSet, Split
from model import targets_to_truth
from model.metrics import PROB_NAMES
from search.portfolio import fits, load_portfolio
from search.space import SearchSpace

log = logging.getLogger(__name__)

KINDS = {"print_error": "print errors", "physical_error": "physical defects"}
WARMUP = 4  # finished trials before a kind is judged
LIFT = 0.2  # best AP - chance, as a share of 1 - chance: below it, the study is blind
MAX_REMEDIES = 3  # trials queued for a blind kind
ATTR = "blindness"  # study attribute: {kind: the line said}


@dataclass(frozen=True)
class Blindness:
    """A defect kind the study's trials have not learnt to see."""

    kind: str
    best_ap: float
    chance: float
    trials: int

    def line(self, remedy: str) -> str:
        return (f"blind   {KINDS[self.kind]}: best validation AP {self.best_ap:.3f} after "
                f"{self.trials} trials, chance {self.chance:.3f}; {remedy}")


def chance_of(data: EraserSet, split: Split) -> dict[str, float]:
    """Each kind's share of the validation erasers: the AP of a model that guesses."""
    rows = {k: i for i, k in enumerate(data.ids)}
    targets = data.targets[[rows[k] for k in split.val_ids()]]
    truth = targets_to_truth(targets)
    return {k: float(truth[:, PROB_NAMES.index(k)].mean()) for k in KINDS}


def blind_kinds(trials: list[FrozenTrial], chance: dict[str, float]) -> list[Blindness]:
    """The kinds no finished trial has lifted :data:`LIFT` above chance, once
    :data:`WARMUP` trials have finished (none before)."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) < WARMUP:
        return []
    out = []
    for kind, p in chance.items():
        aps = [t.user_attrs[f"{kind}_ap"] for t in finished
               if isinstance(t.user_attrs.get(f"{kind}_ap"), float)
               and math.isfinite(t.user_attrs[f"{kind}_ap"])]
        best = max(aps, default=p)
        if 0 < p < 1 and (best - p) / (1 - p) < LIFT:
            out.append(Blindness(kind, best, p, len(finished)))
    return out


def remedies(space: SearchSpace, tried: list[dict]) -> tuple[list[dict], str]:
    """Trial parameters that can see small local defects, not among ``tried``, and a few
    words for what they are."""
    entries = load_portfolio()
    patch = next((e.params for e in entries if e.params.get("backbone_mode") == "patch"), None)
    out: list[dict] = []
    if patch is not None and "patch" in space.backbone_modes and space.backbones:
        backbone = (patch["backbone"] if patch["backbone"] in space.backbones
                    else space.backbones[0])
        for size in sorted(space.patch_sizes, reverse=True):
            for channels in space.channel_sets:
                out.append({**patch, "backbone": backbone, "patch_size": size,
                            "channels": channels})
        what = (f"next: {backbone} patch by patch at "
                f"{'/'.join(map(str, sorted(space.patch_sizes, reverse=True)))} px")
    else:
        size = max(space.sizes)
        scratch = [e.params for e in entries if "input_size" in e.params]
        out = [{**p, "input_size": size} for p in scratch]
        if space.backbones:
            out = [{**p, "backbone": "scratch"} for p in out]
        what = (f"next: scratch CNNs at {size} px, the largest this space holds (the patch "
                "family, which sees print errors best, needs a backbone's ImageNet weights: "
                "--weights)")
    key = ("backbone_mode", "patch_size", "channels", "input_size", "backbone")
    seen = [{k: t.get(k) for k in key} for t in tried]
    fresh = [p for p in out if {k: p.get(k) for k in key} not in seen and fits(p, space)]
    return fresh[:MAX_REMEDIES], what


class BlindnessWatch:
    """Optuna callback: report a blind kind once and queue trials that can see it.

    ``say`` gets the one line (the command prints it). ``chance``: :func:`chance_of`.
    """

    def __init__(self, space: SearchSpace, chance: dict[str, float],
                 say: Callable[[str], None]) -> None:
        self.space = space
        self.chance = chance
        self.say = say

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        said = dict(study.user_attrs.get(ATTR, {}))
        trials = study.get_trials(deepcopy=False)
        for blind in blind_kinds(trials, self.chance):
            if blind.kind in said:
                continue
            tried = [t.params for t in trials]
            tried += [t.system_attrs.get("fixed_params", {}) for t in trials
                      if t.state == TrialState.WAITING]
            queued, what = remedies(self.space, tried)
            for params in queued:
                study.enqueue_trial(params, user_attrs={"remedy": f"{blind.kind} blindness"})
            line = blind.line(f"{what} ({len(queued)} trials queued)" if queued
                              else "nothing left to try in this space: a longer --budget, "
                              "a GPU or the patch family (--weights) would see more")
            said[blind.kind] = line
            study.set_user_attr(ATTR, said)
            log.info(line)
            self.say(line)

