"""The study notices blindness (search.blindness): a defect kind near chance after the first
trials is said once, and the next trials go to what can see it."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.blindness import ATTR, WARMUP, BlindnessWatch, blind_kinds, remedies
from search.plan import TIERS
from search.portfolio import fits
from search.space import suggest_config

CHANCE = {"print_error": 0.18, "physical_error": 0.2}
WITH_PATCHES = TIERS[2].space(backbones=("tf_efficientnet_lite0",),
                              backbone_modes=("frozen", "patch"))


def finished(print_ap: float, physical_ap: float, state=TrialState.COMPLETE):
    return create_trial(state=state, value=0.5, params={"lr": 0.01},
                        distributions={"lr": FloatDistribution(1e-4, 1e-1)},
                        user_attrs={"print_error_ap": print_ap,
                                    "physical_error_ap": physical_ap},
                        intermediate_values={1: 0.5})


def test_a_kind_near_chance_after_the_warmup_is_blind_and_not_before():
    trials = [finished(0.22, 0.85) for _ in range(WARMUP - 1)]
    assert blind_kinds(trials, CHANCE) == []  # too early to judge
    trials.append(finished(0.25, 0.9))
    (blind,) = blind_kinds(trials, CHANCE)
    assert blind.kind == "print_error" and blind.best_ap == 0.25 and blind.trials == WARMUP
    assert "print errors: best validation AP 0.250 after 4 trials, chance 0.180" in \
        blind.line("x")
    trials.append(finished(0.6, 0.9))  # one trial that sees it is enough
    assert blind_kinds(trials, CHANCE) == []


def test_remedies_are_the_patch_family_where_searched_else_the_largest_scratch_inputs():
    queued, what = remedies(WITH_PATCHES, tried=[])
    assert queued and all(p["backbone_mode"] == "patch" for p in queued)
    assert {p["patch_size"] for p in queued} <= set(WITH_PATCHES.patch_sizes)
    assert max(p["patch_size"] for p in queued) == max(WITH_PATCHES.patch_sizes)
    assert all(fits(p, WITH_PATCHES) for p in queued) and "patch by patch" in what
    again, _ = remedies(WITH_PATCHES, tried=queued)
    assert again and not any(p in queued for p in again)  # never the same twice
    scratch_only = TIERS[0].space()
    queued, what = remedies(scratch_only, tried=[])
    assert queued and all(p["input_size"] == max(scratch_only.sizes) for p in queued)
    assert "--weights" in what


def test_the_watch_says_it_once_and_queues_trials_that_replay():
    study = optuna.create_study(direction="maximize")
    for _ in range(WARMUP):
        study.add_trial(finished(0.2, 0.8))
    lines = []
    watch = BlindnessWatch(WITH_PATCHES, CHANCE, lines.append)
    watch(study, study.trials[-1])
    watch(study, study.trials[-1])  # a second look (or a second worker) says nothing new
    assert len(lines) == 1 and lines[0].startswith("blind   print errors")
    assert "trials queued" in lines[0] and "print_error" in study.user_attrs[ATTR]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert waiting and all(t.user_attrs["remedy"] == "print_error blindness" for t in waiting)
    trial = study.ask()
    assert suggest_config(trial, WITH_PATCHES).model.__class__.__name__ == "PatchConfig"
