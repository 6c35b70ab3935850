"""Plan a study around the user's compute budget: how big a search space the budget can hold.

A search needs many trials to find anything; a budget that holds three full trials of large
networks is spent before the sampler has learned a thing (a 30-minute CPU search once ran one
trial and lost to a plain fixed CNN). So the study chooses its fidelity from the budget: from
a ladder of search spaces (:data:`TIERS`, small inputs and narrow networks first) it takes
the richest one whose median configuration, timed on this device through the real training
loop (``search.estimate``), still fits at least :data:`MIN_FULL_TRIALS` full trials in the
budget. Flags the user gave explicitly (sizes, epochs) override the tier's and the plan says
so. The plan is plain data, printed by ``run_study.py`` and stored on the study.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from search.estimate import EpochTimer, EstimateError, duration, estimate_study
from search.space import SearchSpace

MIN_FULL_TRIALS = 25  # a search, not a handful of guesses
DEFAULT_BUDGETS = {"cpu": 30 * 60, "mps": 60 * 60, "cuda": 2 * 3600}  # seconds, per device
DEMO_BUDGET = 4 * 60  # the demo shows a whole search, export and test score in ~5 minutes
TRIALS_PER_FULL = 6  # the budget stops the study; this only caps the trials (most are pruned)
# A frozen backbone's trials take seconds once its features exist: with pretrained families the
# cap must not end the study long before its budget does.
PRETRAINED_TRIALS = 200
# Nor may a timing taken while the machine was busy (it once said 28 s an epoch for a 1 s epoch
# and ended a 10-minute study after 3): the cap is at least the trials the budget holds at this
# many seconds each, so only the budget ends a budgeted study.
MIN_TRIAL_SECONDS = 5


# What small budgets cannot afford to explore: choices that lost in every comparison of the
# portfolio search (multiclass heads, max-pooled and dense heads, 5x5 kernels after the first
# block, learning rates of 1e-3 and 1e-2 against 3e-3; bench/RESULTS.md, "Proven starting
# points"). A search of a handful of full trials spends them better on what matters.
FOCUSED = {"tasks": ("multilabel",), "kernels_first": (3, 5), "kernels_rest": (3,),
           "dense_widths": (0,), "head_pools": ("avg",), "optimizers": ("adamw",),
           "lr": (1.5e-3, 6e-3)}


@dataclass(frozen=True)
class Tier:
    """One rung of the fidelity ladder: the bounds of a search space."""

    name: str
    sizes: tuple[int, ...]
    depth: tuple[int, int]
    base_widths: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    epochs: int
    backbone_sizes: tuple[int, ...] = (128, 160)  # inputs of the pretrained backbones
    # inputs of the patch family: near the delivered 310 px, where a letter's stroke is still
    # a few pixels; only its head trains, so even a CPU rung affords them
    patch_sizes: tuple[int, ...] = (224,)
    focused: bool = False  # the FOCUSED choices instead of the whole space

    def space(self, **overrides: object) -> SearchSpace:
        bounds = {k: v for k, v in asdict(self).items() if k not in ("name", "focused")}
        if self.focused:
            bounds.update(FOCUSED)
        # Early stopping after half the epochs without a gain, not a quarter: with a cosine
        # schedule the scores of small networks rise late (best epochs 30-55 of 60 in the
        # portfolio search), and a quarter stopped a portfolio configuration at epoch 18 (0.49)
        # that reaches 0.89 with all 60. The pruner cuts the hopeless ones earlier anyway.
        patience = max(3, int(overrides.get("epochs", self.epochs)) // 2)
        return SearchSpace(**{**bounds, "patience": patience, **overrides})


# Cheapest first. Small inputs train many more epochs per minute, and at CPU budgets that
# buys more than pixels (bench/RESULTS.md, "Time to quality"); the larger rungs are for GPUs.
TIERS: tuple[Tier, ...] = (
    Tier("xs", sizes=(48, 64), depth=(3, 3), base_widths=(8, 16), batch_sizes=(16, 32),
         epochs=60, backbone_sizes=(96, 128), focused=True),
    Tier("s", sizes=(64, 96), depth=(3, 4), base_widths=(16, 24), batch_sizes=(16, 32),
         epochs=40, backbone_sizes=(96, 128), focused=True),
    Tier("m", sizes=(96, 128), depth=(3, 5), base_widths=(16, 24, 32),
         batch_sizes=(16, 32, 64), epochs=30, backbone_sizes=(128, 160),
         patch_sizes=(224, 320), focused=True),
    Tier("l", sizes=(128, 160), depth=(3, 5), base_widths=(16, 24, 32, 48),
         batch_sizes=(32, 64, 128), epochs=30, backbone_sizes=(160, 224),
         patch_sizes=(224, 320)),
    Tier("xl", sizes=(160, 224), depth=(4, 6), base_widths=(24, 32, 48),
         batch_sizes=(32, 64, 128), epochs=40, backbone_sizes=(224, 288),
         patch_sizes=(224, 320)),
)
TIER_NAMES = tuple(t.name for t in TIERS)
DEFAULT_TIER = {"cpu": "s", "mps": "m", "cuda": "l"}  # without a timing (--no-estimate)


def parse_budget(text: str) -> float:
    """``30m``, ``2h``, ``90s``, ``1h30m`` or plain seconds -> seconds. Raises ``ValueError``
    with a message that says what is accepted."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?"
                             r"(?:(\d+(?:\.\d+)?)s)?", s)
        if not s or parts is None or not any(parts.groups()):
            raise ValueError(f"--budget {text!r} is not a duration; write e.g. 30m, 2h, 1h30m "
                             "or a number of seconds.")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + sec
    if not math.isfinite(seconds) or seconds < 60:
        raise ValueError(f"--budget {text!r} is under a minute; a search needs at least a few "
                         "minutes (e.g. --budget 10m).")
    return seconds


@dataclass(frozen=True)
class Plan:
    """What the study will do with its budget, and why (plain data, stored on the study)."""

    budget_seconds: float
    budget_source: str  # "--budget 30m", "default for a CPU", ...
    tier: str
    space: SearchSpace
    epoch_seconds: float | None  # the timed median configuration, one epoch (None: not timed)
    timed: str | None  # that configuration, described
    n_trials: int
    reasons: tuple[str, ...] = ()
    overrides: tuple[str, ...] = field(default=())

    @property
    def trial_seconds(self) -> float | None:
        """A median trial that runs all its epochs."""
        return None if self.epoch_seconds is None else self.epoch_seconds * self.space.epochs

    @property
    def full_trials(self) -> float | None:
        """How many full median trials the budget holds."""
        t = self.trial_seconds
        return None if not t else self.budget_seconds / t

    def to_dict(self) -> dict:
        d = asdict(self)
        d["space"] = self.space.to_dict()
        return d

    def describe(self) -> list[str]:
        """The plan in a few plain lines for the terminal."""
        sp = self.space
        scratch = (f"inputs {'/'.join(map(str, sp.sizes))} px, {sp.depth[0]}-{sp.depth[1]} "
                   f"blocks from {'/'.join(map(str, sp.base_widths))} channels, "
                   if sp.scratch else "")
        lines = [f"{duration(self.budget_seconds)} ({self.budget_source}): search space "
                 f"'{self.tier}' = {scratch}up to {sp.epochs} epochs a trial (Hyperband stops "
                 "weak ones early)"]
        if sp.backbones:
            modes = " or ".join("fine-tuned (up to "
                                f"{min(sp.epochs, sp.finetune_epochs)} epochs)" if m == "finetune"
                                else m for m in sp.backbone_modes)
            lines.append(f"pretrained {', '.join(sp.backbones)} at "
                         f"{'/'.join(map(str, sp.backbone_sizes))} px, {modes}")
        if self.epoch_seconds is not None:
            lines.append(f"a median trial ({self.timed}) takes about "
                         f"{duration(self.epoch_seconds)} per epoch here, "
                         f"{duration(self.trial_seconds)} in full: the budget holds about "
                         f"{math.floor(self.full_trials)} full trials; the study stops when "
                         f"it is spent (or after {self.n_trials} trials, most of them pruned)")
        lines += list(self.reasons) + [f"{o} (given on the command line)"
                                       for o in self.overrides]
        return lines


def plan_study(budget: float, budget_source: str, device: str | torch.device, *,
               n_train: int, n_val: int, base: SearchSpace, sizes: tuple[int, ...] | None = None,
               epochs: int | None = None, n_trials: int | None = None, tier: str | None = None,
               timer: EpochTimer | None = None, measure: bool = True) -> Plan:
    """Choose the search space for ``budget`` seconds on ``device``.

    ``base`` carries what the budget does not decide (metric, thresholds, seed, tasks,
    channel sets, noise-awareness); ``sizes``/``epochs`` given by the user override the tier's;
    ``tier`` forces a rung (``measure=False``: no timing, the device's default rung).
    """
    device = torch.device(device)
    overrides = {k: v for k, v in (("sizes", tuple(sizes) if sizes else None),
                                   ("epochs", epochs)) if v is not None}
    said = tuple(f"--{k} {' '.join(map(str, v)) if isinstance(v, tuple) else v} wins over "
                 "the plan" for k, v in overrides.items())
    common = {f: getattr(base, f) for f in ("channel_sets", "metric", "threshold",
                                             "min_recall", "noise_aware", "seed", "backbones",
                                             "backbone_modes", "scratch")}

    def space_of(t: Tier) -> SearchSpace:
        return t.space(**common, **overrides)

    def timed_space(t: Tier) -> SearchSpace:
        # the rung is chosen on the scratch CNNs: the pretrained ones are the same few
        # networks at every rung, and frozen trials cost seconds once their features exist
        return replace(space_of(t), backbones=(), scratch=True)

    if tier is not None or not measure or not base.scratch:
        chosen = next(t for t in TIERS if t.name == (tier or DEFAULT_TIER[device.type]))
        why = ("the rung was chosen on the command line" if tier else
               "the pretrained backbones alone: nothing to time (the rung sets their input "
               "sizes); the budget stops the study" if not base.scratch else
               "not timed (--no-estimate): the device's default rung")
        return _plan(budget, budget_source, chosen, space_of(chosen), None, None, n_trials,
                     (why,), said)
    # From the cheapest rung up, until one no longer fits: a CPU never spends its budget
    # timing the large networks it could not train anyway.
    reasons: list[str] = []
    chosen = None
    for t in TIERS:
        space = space_of(t)
        try:
            est = estimate_study(timed_space(t), n_train, n_val, device, 1, timer=timer)
        except EstimateError as exc:
            reasons.append(f"rung '{t.name}' could not be timed: the configuration {exc}")
            break
        full = budget / max(est.trial_seconds, 1e-9)
        if full < MIN_FULL_TRIALS and chosen is not None:
            reasons.append(f"rung '{t.name}' would fit only {math.floor(full)} full trials")
            break
        chosen = (t, space, est)
        if full < MIN_FULL_TRIALS:  # even the smallest rung
            reasons.append(f"even the smallest rung fits only {math.floor(full)} full trials "
                           f"(a search wants {MIN_FULL_TRIALS}+): a longer --budget or a GPU "
                           "would search better")
            break
    if chosen is None:  # the trials will meet the same limit and fail one by one, saying why
        fallback = next(t for t in TIERS if t.name == DEFAULT_TIER[device.type])
        return _plan(budget, budget_source, fallback, space_of(fallback), None, None, n_trials,
                     (*reasons, "planned without a timing: the device's default rung"), said)
    t, space, est = chosen
    if t is not TIERS[-1] and not any("smallest" in r for r in reasons):
        reasons.insert(0, f"rung '{t.name}' is the richest that fits {MIN_FULL_TRIALS}+ full "
                       "trials in the budget")
    return _plan(budget, budget_source, t, space, est.epoch_seconds, est.architecture,
                 n_trials, tuple(reasons), said)


def _plan(budget: float, source: str, tier: Tier, space: SearchSpace, epoch_s: float | None,
          timed: str | None, n_trials: int | None, reasons: tuple[str, ...],
          overrides: tuple[str, ...]) -> Plan:
    if n_trials is None:
        full = budget / (epoch_s * space.epochs) if epoch_s else MIN_FULL_TRIALS
        n_trials = max(4, math.ceil(full * TRIALS_PER_FULL),
                       math.ceil(budget / MIN_TRIAL_SECONDS))
        if space.backbones:
            n_trials = max(n_trials, PRETRAINED_TRIALS)
    return Plan(budget_seconds=budget, budget_source=source, tier=tier.name, space=space,
                epoch_seconds=epoch_s, timed=timed, n_trials=n_trials, reasons=reasons,
                overrides=overrides)


def planner(budget: float, budget_source: str, device: str | torch.device, *,
            base: SearchSpace, announce: Callable[[], None] | None = None,
            **options: object) -> Callable[[int, int, str], Plan]:
    """The planner ``search.session.prepare`` calls for a new study once the split's sizes
    are known: :func:`plan_study` with these settings (``options``: its keyword options).
    ``announce`` is called first when the plan times networks (that takes a few seconds)."""
    times = options.get("measure", True) and options.get("tier") is None and base.scratch

    def plan(n_train: int, n_val: int, label_kind: str) -> Plan:
        if announce is not None and times:
            announce()
        return plan_study(budget, budget_source, device, n_train=n_train, n_val=n_val,
                          base=base, **options)
    return plan
