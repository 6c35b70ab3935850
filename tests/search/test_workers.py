"""Several workers on one study: the exact total on SQLite and PostgreSQL, a worker killed
with SIGKILL mid-trial, SIGTERM/SIGINT ending the running trial cleanly, passwords kept off
the screen. The multi-process tests drive ``run_study.py`` as the user would; the signal
handling inside one process is tested in-process."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

import run_study
from search import workers
from search.study import (
    GracefulStop,
    create_or_resume,
    make_pruner,
    make_sampler,
    open_storage,
    run_trials,
    storage_for_commands,
)

pytestmark = pytest.mark.timeout(300)  # a hung worker fails its test, not the whole run

ROOT = Path(__file__).resolve().parents[2]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PASSWORD = "s3cret-Pw"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """48 synthetic erasers at 32 px and a decoded-image cache shared by every process."""
    from data.synth import generate

    folder = tmp_path_factory.mktemp("workers") / "erasers"
    generate(folder, n=48, seed=11, size=32, defect_rate=0.5, workers=1)
    return {"data": str(folder), "cache": str(tmp_path_factory.mktemp("cache"))}


def study_args(tiny: dict[str, str], url: str | None, *extra: str, n: int = 4,
               epochs: int = 1) -> list[str]:
    storage = ["--storage", url] if url else []
    # no time estimate: these tests are about the workers, and it would delay their start
    return ["--data", tiny["data"], "--study", "w", *storage, "--n-trials", str(n),
            "--epochs", str(epochs), "--sizes", "32", "--cache-dir", tiny["cache"],
            "--no-estimate", *extra]


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run_study.py"), *args], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"run_study.py did not end within {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


@functools.cache
def storage(url: str) -> optuna.storages.RDBStorage:
    """One connection pool per database for all the polling (a server has few to give)."""
    return optuna.storages.RDBStorage(url)


def trials(url: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name="w", storage=storage(url)).get_trials()
    except KeyError:  # not created yet
        return []


def wait_for(what: str, check: Callable[[], FrozenTrial | None], proc: subprocess.Popen,
             timeout: float = 120) -> FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def training(url: str) -> Callable[[], FrozenTrial | None]:
    """A RUNNING trial whose objective has begun (its configuration is sampled, so its
    heartbeat runs and it is preparing or training)."""
    def check() -> FrozenTrial | None:
        return next((t for t in trials(url) if t.state == TrialState.RUNNING
                     and "architecture" in t.user_attrs), None)
    return check


def assert_exact_total(url: str, n: int) -> list[FrozenTrial]:
    """``n`` finished trials, none left running, every FAIL explained, no trial run twice
    (retries repeat a FAIL's parameters, never a finished trial's). A rerun queued after an
    interruption may still wait when the total was reached without it."""
    ts = trials(url)
    states = [t.state for t in ts]
    assert sum(s in FINISHED for s in states) == n, states
    assert TrialState.RUNNING not in states, states
    assert all("retry_of" in t.user_attrs for t in ts if t.state == TrialState.WAITING)
    for t in ts:
        if t.state == TrialState.FAIL:
            assert "fail_reason" in t.user_attrs or _retried(ts, t), t
    params = [tuple(sorted(t.params.items())) for t in ts if t.state in FINISHED]
    assert len(set(params)) == len(params), "a configuration was finished twice"
    return ts


def _retried(ts: list[FrozenTrial], failed: FrozenTrial) -> FrozenTrial | None:
    """The trial that reran ``failed`` (a heartbeat retry or an interrupted trial queued)."""
    return next((t for t in ts if t.user_attrs.get("retry_of") == failed.number
                 and t.number != failed.number), None)


def database_text(url: str) -> str:
    """Every row of every table in the storage, as text."""
    engine = sqlalchemy.create_engine(url)
    meta = sqlalchemy.MetaData()
    meta.reflect(engine)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in meta.sorted_tables
                             for row in conn.execute(sqlalchemy.select(table)))
    finally:
        engine.dispose()


def test_sqlite_two_workers_finish_the_exact_total(tiny, tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code, out = finish(start(study_args(tiny, url, "--workers", "2", n=3), tmp_path))
    assert code == 0, out
    assert "[worker 0] started" in out and "[worker 1] started" in out, out
    assert "database is locked" not in out and "Traceback" not in out, out
    ts = assert_exact_total(url, 3)
    assert all(t.user_attrs["fail_reason"].startswith("surplus")
               for t in ts if t.state == TrialState.FAIL)
    assert all("checkpoint_artifact" in t.user_attrs
               for t in ts if t.state == TrialState.COMPLETE)


@pytest.mark.postgres
def test_postgres_three_workers_exact_total_and_no_password_shown(tiny, tmp_path,
                                                                  postgres_url):
    # trust authentication: the server accepts (and ignores) a password in the URL
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    code, out = finish(start(study_args(tiny, None, "--workers", "3", n=4), tmp_path,
                             env={"OPTUNA_STORAGE": url}))
    assert code == 0, out
    assert all(f"[worker {i}] started" in out for i in range(3)), out
    ts = assert_exact_total(url, 4)
    assert all(t.user_attrs["fail_reason"].startswith("surplus")
               for t in ts if t.state == TrialState.FAIL)
    assert PASSWORD not in out
    assert 'optuna-dashboard "$OPTUNA_STORAGE"' in out and "postgres:***@" in out
    assert PASSWORD not in database_text(url)  # attrs, dashboard notes, everything stored


@pytest.mark.postgres
def test_postgres_worker_killed_mid_trial_is_failed_and_retried(tiny, tmp_path, postgres_url,
                                                                capsys):
    url = postgres_url
    args = study_args(tiny, url, "--heartbeat", "1", n=1)
    victim = start([*args, "--worker-index", "0"], tmp_path)
    killed = wait_for("a trial in training", training(url), victim)
    victim.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
    victim.communicate()
    assert next(t for t in trials(url) if t.number == killed.number).state == \
        TrialState.RUNNING

    # another worker (here in-process) fails it once its heartbeat is 4 s old, and reruns it
    assert run_study.main(args) == 0
    assert "Best trials of 'w'" in capsys.readouterr().out
    ts = assert_exact_total(url, 1)
    dead = next(t for t in ts if t.number == killed.number)
    assert dead.state == TrialState.FAIL
    retry = _retried(ts, dead)
    assert retry is not None and retry.state in FINISHED and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number
    assert "heartbeat" in retry.user_attrs["retry_reason"]


def test_sigterm_ends_the_running_trial_and_the_rerun_resumes(tiny, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    args = study_args(tiny, url, n=1)
    proc = start(args, tmp_path)
    running = wait_for("a trial in training", training(url), proc)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 130, out
    assert "Interrupted" in out and "Traceback" not in out, out
    ts = trials(url)
    assert TrialState.RUNNING not in [t.state for t in ts]
    stopped = next(t for t in ts if t.number == running.number)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted (Ctrl-C or SIGTERM); queued again"
    queued = _retried(ts, stopped)
    assert queued is not None and queued.state == TrialState.WAITING
    assert queued.system_attrs["fixed_params"] == stopped.params  # enqueue_trial's record

    assert run_study.main(args) == 0  # the same command resumes (here in-process)
    capsys.readouterr()
    ts = assert_exact_total(url, 1)
    rerun = next(t for t in ts if t.number == queued.number)
    assert rerun.state in FINISHED and rerun.params == stopped.params


def test_workers_parent_passes_the_signal_on_and_kills_stragglers(tmp_path):
    polite = ("import sys, time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    sys.exit(130)")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(60)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              start_new_session=True) for code in (polite, stubborn)]
    assert [p.stdout.readline() for p in procs] == [b"ready\n", b"ready\n"]
    workers.stop_workers(procs, grace=2.0)
    assert [p.returncode for p in procs] == [130, -signal.SIGKILL]


# --- in one process: the signal arrives inside a trial, or between two -------------------

@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1)
    study, _ = create_or_resume("s", storage, sampler=make_sampler("random", 0),
                                pruner=make_pruner("none", 3),
                                attrs={"data_hash": "d", "split_hash": "s"})
    return study


def test_sigint_inside_a_trial_fails_it_and_queues_its_parameters(study):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this trial trains
            time.sleep(5)  # interrupted long before this ends
        return x

    before = signal.getsignal(signal.SIGINT)
    with GracefulStop() as stop, pytest.raises(KeyboardInterrupt):
        run_trials(study, objective, n_trials=3, stop=stop)
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
    t0, t1, t2 = study.get_trials()
    assert (t0.state, t1.state, t2.state) == (TrialState.COMPLETE, TrialState.FAIL,
                                              TrialState.WAITING)
    assert t1.user_attrs["fail_reason"] == "interrupted (Ctrl-C or SIGTERM); queued again"
    assert t2.system_attrs["fixed_params"] == t1.params and t2.user_attrs["retry_of"] == 1

    run_trials(study, lambda t: t.suggest_float("x", 0, 1), n_trials=3)  # resume
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                      TrialState.COMPLETE]
    assert study.get_trials()[2].params == t1.params


def test_sigterm_between_trials_stops_before_the_next_one(study):
    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while Optuna finishes the trial

    with GracefulStop() as stop, pytest.raises(KeyboardInterrupt):
        run_trials(study, lambda t: 1.0, n_trials=3, callbacks=[after_trial], stop=stop)
    # the finished trial stays COMPLETE and no trial was started (or left RUNNING) after it
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_storage_for_commands_hides_the_password(monkeypatch):
    url = f"postgresql+psycopg2://team:{PASSWORD}@db.example/studies"
    assert storage_for_commands(url) == "postgresql+psycopg2://team:***@db.example/studies"
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    assert storage_for_commands(url) == '"$OPTUNA_STORAGE"'
    assert storage_for_commands("sqlite:///studies.db") == "sqlite:///studies.db"


def test_workers_get_the_storage_in_their_environment_not_their_command_line():
    argv = ["--data", "d", "--storage", f"postgresql://u:{PASSWORD}@h/db", "--workers", "2",
            f"--storage=postgresql://u:{PASSWORD}@h/db", "--study", "s"]
    assert workers.without_storage(argv) == ["--data", "d", "--workers", "2", "--study", "s"]
