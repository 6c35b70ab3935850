import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.study import (
    CircuitBreaker,
    RepeatedFailure,
    StudyError,
    SurplusTrial,
    artifact_dir_for,
    create_or_resume,
    load_study,
    make_pruner,
    make_sampler,
    mask_url,
    n_finished,
    open_storage,
    run_trials,
    storage_url,
    surplus_guard,
)

ATTRS = {"data_hash": "d1", "split_hash": "s1"}


@pytest.fixture
def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1)


def new_study(storage, name="s", attrs=ATTRS):
    study, _ = create_or_resume(name, storage, sampler=make_sampler("random", 0),
                                pruner=make_pruner("none", 3), attrs=attrs)
    return study


def test_run_trials_stops_at_the_total_and_resumes_to_a_new_one(storage):
    study = new_study(storage)
    run_trials(study, lambda t: float(t.number), n_trials=3)
    assert n_finished(study) == 3
    run_trials(study, lambda t: float(t.number), n_trials=3)  # already there: no new trial
    assert len(study.trials) == 3
    run_trials(study, lambda t: float(t.number), n_trials=5)
    assert n_finished(study) == 5 and len(study.trials) == 5


def test_failed_trials_do_not_count_and_are_caught(storage):
    study = new_study(storage)
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if trial.number == 0:
            raise ValueError("boom")
        return 1.0

    run_trials(study, objective, n_trials=2, catch=(ValueError,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_waits_for_the_last_trial_running_elsewhere(storage):
    study = new_study(storage)
    run_trials(study, lambda t: 1.0, n_trials=1)
    other = study.ask()  # a worker elsewhere runs the last trial
    threading.Timer(1.5, lambda: study.tell(other, 2.0)).start()
    start = time.monotonic()
    run_trials(study, lambda t: 1.0, n_trials=2, poll_seconds=0.2)
    assert time.monotonic() - start >= 1.4
    assert len(study.trials) == 2 and n_finished(study) == 2


def test_surplus_trial_is_refused(storage):
    study = new_study(storage)
    study.ask()  # trial 0 running in another worker: the total of 1 is taken
    late = study.ask()
    with pytest.raises(SurplusTrial):
        surplus_guard(study, lambda t: 1.0, n_trials=1)(late)
    assert late.user_attrs["fail_reason"].startswith("surplus")


def test_resume_with_other_data_is_refused(storage):
    new_study(storage)
    with pytest.raises(StudyError, match="different data"):
        new_study(storage, attrs={"data_hash": "other", "split_hash": "s1"})
    _, resumed = create_or_resume("s", storage, sampler=make_sampler("tpe", 0),
                                  pruner=make_pruner("hyperband", 3), attrs=ATTRS)
    assert resumed


def test_storage_errors_are_user_facing(tmp_path):
    with pytest.raises(StudyError, match="unknown scheme 'redis'"):
        open_storage("redis://localhost/0")
    with pytest.raises(StudyError, match="not a database URL"):
        open_storage("studies.db")
    with pytest.raises(StudyError, match="cannot open the storage") as info:
        open_storage("postgresql+psycopg2://me:secret@127.0.0.1:1/nope")
    assert "secret" not in str(info.value)


def test_unknown_study_lists_the_existing_ones(storage):
    new_study(storage, "alpha")
    with pytest.raises(StudyError, match="studies: alpha"):
        load_study("beta", storage)


def test_url_helpers(tmp_path, monkeypatch):
    assert mask_url("postgresql+psycopg2://u:pw@h/db") == "postgresql+psycopg2://u:***@h/db"
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///x.db")
    assert storage_url(None) == "sqlite:///x.db" and storage_url("sqlite:///y.db").endswith("y.db")
    assert artifact_dir_for(f"sqlite:///{tmp_path}/a.db") == tmp_path / "artifacts"


def test_samplers_and_pruners():
    assert isinstance(make_sampler("gp", 0), optuna.samplers.GPSampler)
    assert isinstance(make_pruner("median", 5), optuna.pruners.MedianPruner)
    with pytest.raises(StudyError):
        make_sampler("grid", 0)


def test_read_only_commands_do_not_create_a_mistyped_sqlite_file(tmp_path):
    from search.study import open_existing_storage

    db = tmp_path / "missing.db"
    with pytest.raises(StudyError, match="does not exist"):
        open_existing_storage(f"sqlite:///{db}")
    assert not db.exists()
    open_storage(f"sqlite:///{db}")
    assert open_existing_storage(f"sqlite:///{db}") is not None


def test_a_raw_at_in_the_password_is_masked_whole_and_explained():
    url = "postgresql+psycopg2://u:secret@PW@db.example:5432/studies"
    assert mask_url(url) == "postgresql+psycopg2://u:***@db.example:5432/studies"
    with pytest.raises(StudyError, match="URL-encode the password") as info:
        open_storage(url)
    assert "secret" not in str(info.value) and "PW" not in str(info.value)


class Broken(Exception):
    """What a trial raises in these tests: a failure with a cause, as TrialFailed has."""


def failing(cause: str):
    def objective(trial):
        trial.set_user_attr("fail_cause", cause)
        trial.set_user_attr("fail_reason", f"{cause} in trial {trial.number}")
        raise Broken(cause)
    return objective


def test_the_same_failure_three_times_in_a_row_stops_the_run_and_keeps_the_study(storage):
    study = new_study(storage)
    with pytest.raises(RepeatedFailure, match="3 trials in a row failed the same way") as exc:
        run_trials(study, failing("weights"), n_trials=50, catch=(Broken,))
    assert exc.value.count == 3 and "weights in trial 2" in exc.value.reason
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    run_trials(study, lambda t: 1.0, n_trials=2)  # fixed: the same study resumes
    assert n_finished(study) == 2


def test_a_finished_trial_or_another_cause_restarts_the_count():
    breaker = CircuitBreaker(limit=2)

    def trial(state, cause=None):
        attrs = {"fail_cause": cause, "fail_reason": f"{cause}!"} if cause else {}
        return optuna.trial.create_trial(state=state, value=1.0 if state != TrialState.FAIL
                                         else None, user_attrs=attrs)

    for t in (trial(TrialState.FAIL, "oom"), trial(TrialState.COMPLETE),
              trial(TrialState.FAIL, "oom"), trial(TrialState.FAIL, "weights"),
              trial(TrialState.FAIL),  # surplus or interrupted: no cause of its own
              trial(TrialState.PRUNED), trial(TrialState.FAIL, "weights")):
        breaker(None, t)
        breaker.check()
    breaker(None, trial(TrialState.FAIL, "weights"))
    with pytest.raises(RepeatedFailure, match="weights!"):
        breaker.check()
