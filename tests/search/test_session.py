"""What run_study.py does, as functions (search.session): prepare, resume, flagged, best."""

from __future__ import annotations

import math

import optuna
import pytest

from search.session import best_trials, prepare, study_attrs
from search.space import SearchSpace
from search.study import StudyError

SPACE = SearchSpace(sizes=(32,), depth=(2, 2), base_widths=(8,), batch_sizes=(16,), epochs=1,
                    patience=0, tasks=("multilabel",))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("session-cache")


def _prepare(synthetic, tmp_path, cache, **kw):
    kw.setdefault("study_name", "s")
    kw.setdefault("storage_url", f"sqlite:///{tmp_path / 'studies.db'}")
    return prepare(synthetic, space=kw.pop("space", SPACE), sampler="random", pruner="none",
                   cache_dir=cache, **kw)


def test_a_dry_run_writes_nothing(synthetic, tmp_path, cache):
    session = _prepare(synthetic, tmp_path, cache, dry_run=True)
    assert not (tmp_path / "studies.db").exists()
    assert not session.resumed and session.space == SPACE
    assert session.study.user_attrs["data_hash"] == session.data.data_hash
    assert not session.artifact_dir.exists()
    assert len(session.split.val_ids()) + len(session.split.train_ids()) == len(session.data)


def test_a_new_study_remembers_how_it_was_made_and_a_resume_keeps_its_space(
        synthetic, tmp_path, cache):
    session = _prepare(synthetic, tmp_path, cache)
    attrs = session.study.user_attrs
    assert attrs["split_hash"] == session.split.hash
    assert SearchSpace.from_dict(attrs["space"]) == SPACE
    assert attrs["split"]["n_val"] == len(session.split.val_ids())
    assert attrs["data_path"] == str(synthetic.resolve()) and attrs["n_flagged"] == 0
    assert "split_artifact" in attrs  # the split's ids are kept with the study
    assert session.artifact_dir == (tmp_path / "artifacts").resolve()
    assert "optuna-dashboard sqlite:///" in session.dashboard_command()

    wider = SearchSpace.from_dict({**SPACE.to_dict(), "epochs": 3})
    again = _prepare(synthetic, tmp_path, cache, space=wider)
    assert again.resumed and again.space == SPACE
    assert any("keeps the search space" in n for n in again.notes)
    with pytest.raises(StudyError, match="--flagged"):
        _prepare(synthetic, tmp_path, cache, flagged=[session.data.ids[0]])


def test_flagged_ids_must_be_erasers_of_the_data(synthetic, tmp_path, cache, synthetic_set):
    with pytest.raises(StudyError, match="none of the 2 flagged ids"):
        _prepare(synthetic, tmp_path, cache, flagged=["nope1", "nope2"], dry_run=True)
    ids = synthetic_set.ids
    session = _prepare(synthetic, tmp_path, cache, flagged=[ids[3], ids[1], "ghost"],
                       dry_run=True)
    assert session.flagged == tuple(sorted((ids[1], ids[3])))
    assert any("1 flagged id(s) are not in the data" in n for n in session.notes)
    assert session.study.user_attrs["n_flagged"] == 2
    assert len(session.study.user_attrs["flagged"]) == 2  # the report draws them


def test_study_attrs_bind_the_flagged_list(synthetic, synthetic_set):
    from data import make_split

    split = make_split(synthetic_set.ids, synthetic_set.codes, k=5, seed=0)
    a = study_attrs(synthetic_set, split, SPACE, synthetic, None)
    b = study_attrs(synthetic_set, split, SPACE, synthetic, None, flagged=["x", "y"])
    assert a["flagged_hash"] is None and b["flagged_hash"] is not None
    assert a["labels"] is None and a["split"]["k"] == 5 and a["data"] == synthetic_set.summary()


def test_best_trials_skips_failed_and_non_finite_ones():
    study = optuna.create_study(direction="maximize")
    for value in (0.3, 0.9, math.inf, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert [t.value for t in best_trials(study)] == [0.9, 0.6, 0.3]
    assert [t.value for t in best_trials(study, top=1)] == [0.9]


def test_a_planner_chooses_a_new_study_s_space_and_a_resume_keeps_it(synthetic, tmp_path,
                                                                      cache):
    from search.plan import planner

    calls = []

    def plan(n_train, n_val, label_kind):
        calls.append((n_train, n_val, label_kind))
        return planner(600, "test", "cpu", base=SPACE, measure=False, sizes=(32,),
                       epochs=1)(n_train, n_val, label_kind)

    first = _prepare(synthetic, tmp_path, cache, space=plan)
    assert len(calls) == 1 and calls[0][0] == len(first.split.train_ids())
    assert first.plan is not None and first.space == first.plan.space
    assert first.study.user_attrs["plan"]["tier"] == first.plan.tier
    again = _prepare(synthetic, tmp_path, cache, space=plan)
    assert len(calls) == 1 and again.resumed and again.plan is None
    assert again.space == first.space


def test_a_test_split_is_set_aside_and_remembered(synthetic, tmp_path, cache):
    session = _prepare(synthetic, tmp_path, cache, test_fraction=0.25)
    test = set(session.split.test_ids())
    assert len(test) == len(session.data) // 4
    assert not test & set(session.split.train_ids() + session.split.val_ids())
    assert session.study.user_attrs["split"]["n_test"] == len(test)
    assert any("test split" in n for n in session.notes)
    from search.session import auto_test_fraction

    assert auto_test_fraction(499) == 0.0 and auto_test_fraction(1400) == 0.15


def test_the_portfolio_is_queued_first_in_a_new_study_only(synthetic, tmp_path, cache):
    from search.plan import TIERS

    space = TIERS[1].space(sizes=(64,), epochs=1)
    session = _prepare(synthetic, tmp_path, cache, space=space, portfolio=True)
    waiting = session.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting and all("portfolio" in t.user_attrs for t in waiting)
    assert any("proven starting points" in n for n in session.notes)
    again = _prepare(synthetic, tmp_path, cache, space=space, portfolio=True)
    assert len(again.study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == len(
        waiting)


@pytest.mark.parametrize("space, expect", [
    (SearchSpace(epochs=0), "epochs [0]"), (SearchSpace(sizes=(0,)), "sizes [0]"),
    (SearchSpace(batch_sizes=(-8,)), "batch_sizes"), (SearchSpace(min_recall=2.0), "min_recall"),
    (SearchSpace(), None)])
def test_space_problem(space, expect):
    from search.session import space_problem

    problem = space_problem(space)
    assert (problem is None) if expect is None else expect in problem


def test_a_study_whose_split_cannot_be_saved_is_not_left_half_made(synthetic, tmp_path, cache,
                                                                    monkeypatch):
    from search import session as session_lib
    from search.study import study_names

    def unwritable(session):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(session_lib, "_save_split", unwritable)
    with pytest.raises(StudyError, match="was not created"):
        _prepare(synthetic, tmp_path, cache)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    assert "s" not in study_names(storage)
