"""Planning a study around its budget (search.plan): the richest rung that still holds a
search, explicit flags winning, and budgets as users write them."""

from __future__ import annotations

import pytest

from search.plan import (
    MIN_FULL_TRIALS,
    MIN_TRIAL_SECONDS,
    PRETRAINED_TRIALS,
    TIERS,
    parse_budget,
    plan_study,
    planner,
)
from search.portfolio import fits, load_portfolio
from search.space import SearchSpace

BASE = SearchSpace(seed=3, metric="defect_ap")


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                           ("90s", 90), ("600", 600), (" 10min ", 600)])
def test_budgets_as_users_write_them(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "30", "1x", "m"])
def test_a_budget_that_is_no_duration_or_too_short_is_refused(text):
    with pytest.raises(ValueError, match="--budget"):
        parse_budget(text)


def timer_for(seconds_per_mac: float):
    """A stand-in for the timed epoch: proportional to the configuration's multiply-adds."""
    from model import complexity

    def timer(config, n_train, device):
        return seconds_per_mac * complexity(config.model)["macs"] * n_train
    return timer


def test_the_richest_rung_that_fits_a_search_is_chosen():
    calls = []
    slow = timer_for(1e-10)

    def timer(config, n, device):
        calls.append(config.model.input_size)
        return slow(config, n, device)

    plan = plan_study(1800, "--budget 30m", "cpu", n_train=320, n_val=80, base=BASE,
                      timer=timer)
    assert plan.full_trials >= MIN_FULL_TRIALS
    richer = [t for t in TIERS if TIERS.index(t) > [x.name for x in TIERS].index(plan.tier)]
    assert plan.tier != TIERS[-1].name and richer  # the fastest rungs would not be "search"
    assert max(calls) >= richer[0].sizes[0]  # a richer rung was timed and refused
    assert plan.space.seed == 3 and plan.space.metric == "defect_ap"  # the base is kept
    assert plan.n_trials >= plan.full_trials
    text = "\n".join(plan.describe())
    assert "30 min (--budget 30m)" in text and "full trials" in text


def test_a_fast_device_gets_the_richest_rung_and_a_slow_one_the_smallest_with_a_warning():
    fast = plan_study(7200, "default", "cpu", n_train=320, n_val=80, base=BASE,
                      timer=timer_for(1e-14))
    assert fast.tier == TIERS[-1].name
    slow = plan_study(120, "default", "cpu", n_train=320, n_val=80, base=BASE,
                      timer=timer_for(1e-7))
    assert slow.tier == TIERS[0].name
    assert any("a longer --budget or a GPU" in r for r in slow.reasons)
    # a slow timing (a busy machine) must not end the study before its budget: the cap holds
    # as many trials as the budget could at MIN_TRIAL_SECONDS each
    assert slow.n_trials >= 120 / MIN_TRIAL_SECONDS


def test_flags_given_by_the_user_win_and_the_plan_says_so():
    plan = plan_study(1800, "x", "cpu", n_train=100, n_val=20, base=BASE, sizes=(48,),
                      epochs=5, n_trials=7, timer=timer_for(1e-9))
    assert plan.space.sizes == (48,) and plan.space.epochs == 5 and plan.n_trials == 7
    assert any("--sizes 48 wins" in line for line in plan.describe())


def test_without_timing_the_device_default_rung_and_a_forced_rung():
    plan = plan_study(1800, "x", "cpu", n_train=100, n_val=20, base=BASE, measure=False)
    assert plan.tier == "s" and plan.epoch_seconds is None and plan.n_trials >= 1
    assert plan_study(1800, "x", "cpu", n_train=100, n_val=20, base=BASE,
                      tier="xl").tier == "xl"


def test_a_device_that_cannot_time_any_rung_gets_its_default_rung_and_the_reason():
    def failing(config, n, device):
        raise ValueError("refused")

    plan = plan_study(1800, "x", "cpu", n_train=100, n_val=20, base=BASE, timer=failing)
    assert plan.tier == "s" and plan.epoch_seconds is None
    assert any("could not be timed" in r and "refused" in r for r in plan.reasons)


def test_the_planner_announces_and_plans_once_the_split_is_known():
    said = []
    plan = planner(600, "x", "cpu", base=BASE, timer=timer_for(1e-10),
                   announce=lambda: said.append(1))
    assert said == [] and plan(100, 20, "multiclass").tier and said == [1]
    # nothing timed, nothing announced
    plan = planner(600, "x", "cpu", base=BASE, measure=False, announce=lambda: said.append(2))
    assert plan(100, 20, "multiclass").tier == "s" and said == [1]


def test_every_rung_starts_from_at_least_one_proven_configuration():
    entries = load_portfolio()
    for tier in TIERS:
        assert any(fits(e.params, tier.space()) for e in entries), tier.name


def test_small_rungs_search_only_the_levers_that_matter_and_large_ones_everything():
    small, large = TIERS[0].space(), TIERS[-1].space()
    assert small.tasks == ("multilabel",) and small.optimizers == ("adamw",)
    assert small.kernels_rest == (3,) and small.head_pools == ("avg",)
    wide = SearchSpace()
    assert (large.tasks, large.optimizers, large.lr) == (wide.tasks, wide.optimizers, wide.lr)
    # a space stored before these bounds existed loads with the whole space
    stored = {k: v for k, v in small.to_dict().items() if k not in ("optimizers", "lr")}
    assert SearchSpace.from_dict(stored).optimizers == wide.optimizers


def test_pretrained_backbones_ride_on_the_plan_and_alone_need_no_timing():
    def never(cfg, n_train, n_val, device):  # nothing may be timed for a backbone-only study
        raise AssertionError("timed")

    alone = SearchSpace(backbones=("resnet18",), scratch=False)
    plan = plan_study(600, "x", "cpu", n_train=320, n_val=80, base=alone, timer=never)
    assert plan.space.backbones == ("resnet18",) and not plan.space.scratch
    assert plan.n_trials >= PRETRAINED_TRIALS and plan.epoch_seconds is None
    text = "\n".join(plan.describe())
    assert "pretrained backbones alone" in text and "blocks from" not in text
    assert "pretrained resnet18 at 96/128 px, frozen or fine-tuned (up to 15 epochs)" in text
    both = plan_study(600, "x", "cpu", n_train=320, n_val=80, measure=False,
                      base=SearchSpace(backbones=("resnet18",)))
    assert both.space.scratch and both.n_trials >= PRETRAINED_TRIALS
