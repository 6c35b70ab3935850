"""Proven starting points (search.portfolio): plain data that replays inside the search space,
sees both defect kinds, and is queued as a new study's first trials."""

from __future__ import annotations

import optuna
from optuna.trial import FixedTrial, TrialState

from search.plan import TIERS
from search.portfolio import Entry, enqueue_portfolio, fits, load_portfolio
from search.space import SearchSpace, suggest_config

SMALL = TIERS[0].space()
PATCHES = {"backbones": ("tf_efficientnet_lite0",), "backbone_modes": ("frozen", "patch")}


def test_every_entry_says_how_it_was_found_and_sees_relief_and_ink():
    entries = load_portfolio()
    assert len(entries) >= 3 and len({e.name for e in entries}) == len(entries)
    for e in entries:
        assert len(e.found) > 40, e.name
        space = next(sp for t in TIERS for sp in (t.space(), t.space(**PATCHES))
                     if fits(e.params, sp))
        channels = suggest_config(FixedTrial(e.params), space).model.channels
        assert "NORMAL" in channels and "GRAY" in channels, e.name


def test_fits_refuses_values_outside_the_space():
    entry = load_portfolio()[0]
    assert fits(entry.params, SMALL)
    assert not fits({**entry.params, "input_size": 999}, SMALL)
    assert not fits({**entry.params, "lr": 5.0}, SMALL)
    missing = dict(entry.params)
    del missing["lr"]
    assert not fits(missing, SMALL)


def test_entries_are_queued_first_and_marked():
    study = optuna.create_study(direction="maximize")
    queued = enqueue_portfolio(study, SMALL, limit=2)
    assert len(queued) == 2
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["portfolio"] for t in waiting] == queued
    trial = study.ask()  # the sampler takes the queue first
    config = suggest_config(trial, SMALL)
    assert trial.user_attrs["portfolio"] == queued[0]
    assert config.model.input_size == load_portfolio()[0].params["input_size"]


def test_only_fitting_entries_are_queued_and_noise_aware_studies_get_their_weight():
    inside = load_portfolio()[0]
    outside = Entry("huge", "made up for the test", {**inside.params, "input_size": 999})
    noisy = SearchSpace(**{**SMALL.to_dict(), "noise_aware": True})
    study = optuna.create_study(direction="maximize")
    assert enqueue_portfolio(study, noisy, entries=[outside, inside]) == [inside.name]
    trial = study.ask()
    assert suggest_config(trial, noisy).train.flagged_weight == 1.0


def test_entries_stay_scratch_cnns_in_a_space_with_backbones():
    space = SearchSpace(backbones=("resnet18",))
    study = optuna.create_study(direction="maximize")
    assert enqueue_portfolio(study, space)
    trial = study.ask()
    assert trial.params.get("backbone") is None  # params are suggested on demand
    config = suggest_config(trial, space)
    assert trial.params["backbone"] == "scratch" and not hasattr(config.model, "backbone")
    assert not enqueue_portfolio(optuna.create_study(), SearchSpace(backbones=("resnet18",),
                                                                    scratch=False))


def test_the_patch_entry_is_queued_where_its_backbone_and_family_are_searched():
    from model.config import PatchConfig

    with_patches = TIERS[1].space(**PATCHES)
    study = optuna.create_study(direction="maximize")
    queued = enqueue_portfolio(study, with_patches)
    assert "patch224-lite0" in queued and len(queued) == 3
    configs = [suggest_config(study.ask(), with_patches).model for _ in queued]
    assert sum(isinstance(c, PatchConfig) for c in configs) == 1
    # without its weights (or without the family) it is left out, a scratch entry instead
    assert "patch224-lite0" not in enqueue_portfolio(optuna.create_study(), TIERS[1].space())
