"""Studies and their storage: create or resume, bind to one data set, run to an exact total.

Storage is any SQLAlchemy URL Optuna's ``RDBStorage`` accepts (``sqlite:///studies.db`` by
default, ``postgresql+psycopg2://...`` across machines), with a heartbeat so that a trial
whose worker died is marked FAIL after a grace period and queued again
(``RetryHeartbeatStaleTrialCallback``). The number of trials is a total for the whole study,
shared by every worker and every resume.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///studies.db"
STORAGE_ENV = "OPTUNA_STORAGE"
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("hyperband", "median", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyError(Exception):
    """A study or storage problem the user must act on (message is user-facing)."""


class SurplusTrial(Exception):
    """This trial would exceed the study's total (another worker got there first)."""


class RepeatedFailure(Exception):
    """The same cause failed several trials in a row: this run stops, the study is kept."""

    def __init__(self, count: int, reason: str) -> None:
        self.count, self.reason = count, reason
        super().__init__(f"stopped: {count} trials in a row failed the same way: "
                         f"{reason.rstrip('.')}. The study is kept as it is; fix the cause and "
                         "rerun the same command to resume it.")


FAILURES_IN_A_ROW = 3


class CircuitBreaker:
    """Counts this process's consecutive trials that failed with the same ``fail_cause``
    (an Optuna callback): a study whose every trial fails the same way (weights that do not
    load, a device that runs out of memory on every network) must stop and say so, not fill
    the storage with failed trials. A finished trial resets the count; a trial failed without
    a cause of its own (surplus, interrupted) does not count."""

    def __init__(self, limit: int = FAILURES_IN_A_ROW) -> None:
        self.limit = limit
        self.count = 0
        self.cause: str | None = None
        self.reason = ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in FINISHED:
            self.count, self.cause = 0, None
            return
        cause = trial.user_attrs.get("fail_cause")
        if trial.state != TrialState.FAIL or cause is None:
            return
        self.count = self.count + 1 if cause == self.cause else 1
        self.cause, self.reason = cause, trial.user_attrs.get("fail_reason", cause)

    def check(self) -> None:
        """Raise :class:`RepeatedFailure` once ``limit`` trials in a row failed alike."""
        if self.count >= self.limit:
            raise RepeatedFailure(self.count, self.reason)


def storage_url(arg: str | None = None) -> str:
    """``--storage`` if given, else ``$OPTUNA_STORAGE``, else the local SQLite file."""
    return arg or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for anything shown or logged."""
    try:
        parsed = make_url(url)
        if _raw_at_in_password(parsed):  # the password's tail went into the host: drop it
            parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1])
        return parsed.render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<unparsable storage URL>"


def _raw_at_in_password(parsed: sqlalchemy.engine.URL) -> bool:
    """A password with a raw ``@`` is cut at its first ``@``; the rest lands in the host."""
    return bool(parsed.host and "@" in parsed.host)


RAW_AT = ("its password holds a raw '@' (or another reserved character), which cuts the URL "
          "in the wrong place. URL-encode the password: '@' is %40, ':' %3A, '/' %2F, or let "
          "Python do it: python -c \"import urllib.parse, getpass; "
          "print(urllib.parse.quote(getpass.getpass(), safe=''))\"")


def storage_for_commands(url: str) -> str:
    """How to write ``url`` into a command printed for the user to copy.

    A URL with a password that came from ``$OPTUNA_STORAGE`` is shown as that variable (the
    command then still works and the password stays off the screen); any other URL is shown
    with its password masked.
    """
    try:
        has_password = make_url(url).password is not None
    except (sqlalchemy.exc.ArgumentError, ValueError):
        has_password = False
    if has_password and os.environ.get(STORAGE_ENV) == url:
        return f'"${STORAGE_ENV}"'
    return mask_url(url)


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker died, saying so in the retry's attributes.

    The stale trial itself is already FAIL when this runs (and finished trials cannot take
    attributes), so the dashboard learns why from the WAITING copy: ``retry_of`` and
    ``retry_reason``. Attributes that described the dead run are not copied.
    """

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        stale = ("fail_reason", "stop_reason", "epochs_run")
        trial.user_attrs = {
            **{k: v for k, v in trial.user_attrs.items() if k not in stale},
            "retry_of": trial.number,
            "retry_reason": "its worker stopped sending heartbeats (killed, crashed or cut "
                            "off) and the trial was failed after the grace period",
        }
        log.warning("trial %d lost its worker; it is FAIL and queued again", trial.number)
        super().__call__(study, trial)


def artifact_dir_for(url: str) -> Path:
    """Default artifact folder: ``artifacts/`` next to a SQLite file, else in the cwd."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().parent / "artifacts"
    return Path("artifacts").resolve()


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (yet)."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return False  # open_storage says what is wrong with it
    return (parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).exists())


def open_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int | None = None,
                 max_retry: int = 2) -> RDBStorage:
    """Connect (creating the schema if needed), or raise :class:`StudyError` saying why."""
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StudyError(f"storage URL {shown!r} is not a database URL. Use e.g. "
                         f"{DEFAULT_STORAGE} or postgresql+psycopg2://user@host/db.") from None
    backend = parsed.get_backend_name()
    if _raw_at_in_password(parsed):
        raise StudyError(f"storage URL {shown!r} cannot be used: {RAW_AT}.")
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise StudyError(f"storage URL {shown!r} uses the unknown scheme {backend!r}. Use "
                         f"sqlite:///FILE.db or postgresql+psycopg2://user@host/db.")
    engine_kwargs: dict = {}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).resolve().parent.mkdir(parents=True, exist_ok=True)
        # several workers share the file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url, engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period or 4 * heartbeat_interval,
                        heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=max_retry))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Machines started together race to create the schema of a new database;
                # the loser sees duplicate tables or types. The winner's schema is there now.
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StudyError(f"cannot open the storage {shown}: {reason}. Check that the database "
                         "server is running and reachable, and the URL.") from None


def open_existing_storage(url: str, **kwargs: object) -> RDBStorage:
    """:func:`open_storage` for commands that only read a study: a SQLite file that does not
    exist is a mistyped path, said as such (and not created empty)."""
    if sqlite_file_missing(url):
        raise StudyError(f"the storage {mask_url(url)} names a SQLite file that does not exist "
                         f"({Path(make_url(url).database).resolve()}). Check --storage (or "
                         f"${STORAGE_ENV}): it is the file the search wrote, e.g. "
                         f"{DEFAULT_STORAGE} in the folder run_study.py ran in.")
    return open_storage(url, **kwargs)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate + group model the conditional parameters jointly; the constant
            # liar keeps parallel workers from sampling the same point
            # 5 start-up trials, not Optuna's 10: a CPU budget holds a few dozen trials,
            # and the portfolio's proven starting points count among them
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              constant_liar=True, n_startup_trials=5)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise StudyError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")


def first_rung(max_epochs: int) -> int:
    """The first epoch at which a trial may be pruned: a quarter of the way in. Earlier
    scores do not rank trials (Spearman 0.0-0.1 with the final score at epochs 1-3, 0.5 at
    epoch 8, 0.9 at 15 over 38 runs; bench/RESULTS.md, "Pruning that ranks")."""
    return max(1, max_epochs // 4)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first_rung(max_epochs),
                                              max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4,
                                           n_warmup_steps=first_rung(max_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}.")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def load_study(name: str, storage: RDBStorage, *,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """An existing study, or :class:`StudyError` listing the studies that do exist."""
    if name not in study_names(storage):
        existing = ", ".join(study_names(storage)) or "none"
        raise StudyError(f"there is no study {name!r} in this storage (studies: {existing}). "
                         "Check --study and --storage.")
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def create_or_resume(name: str, storage: optuna.storages.BaseStorage, *,
                     sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
                     attrs: dict) -> tuple[optuna.Study, bool]:
    """Create the study with ``attrs`` as user attributes, or resume it if they agree.

    ``attrs`` must hold ``data_hash`` and ``split_hash``: a study is bound to one data set and
    one split, so resuming it on other data is refused rather than silently mixed.
    """
    existed = name in study_names(storage)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                pruner=pruner, direction="maximize", load_if_exists=True)
    stored = study.user_attrs
    if existed and "data_hash" in stored:
        for key, what in (("data_hash", "data (images or labels)"), ("split_hash", "split")):
            if stored.get(key) != attrs.get(key):
                raise StudyError(
                    f"study {name!r} was run on different {what} ({key} {stored.get(key)} vs "
                    f"{attrs.get(key)} now). Resume it with the same data and split settings, "
                    "or start a new study with another --study name.")
        return study, True
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study, False


def count_states(study: optuna.Study) -> Counter:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def n_finished(study: optuna.Study) -> int:
    counts = count_states(study)
    return sum(counts[s] for s in FINISHED)


class GracefulStop:
    """Ctrl-C and SIGTERM for a process that runs trials: stop cleanly, lose only a trial.

    While a trial's objective runs, the signal raises ``KeyboardInterrupt`` there: the trial
    ends as FAIL with a reason and its parameters are queued again (see :func:`surplus_guard`).
    Anywhere else (Optuna creating or finishing a trial, waiting for other workers) an
    immediate exception could leave a RUNNING trial that no heartbeat ever fails, so the
    signal is only noted and :func:`run_trials` raises ``KeyboardInterrupt`` before it
    starts the next trial. A second signal always raises at once. Use as a context manager
    in the main thread (elsewhere it does nothing); the previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self.in_trial = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        again = self.requested is not None
        self.requested = signum
        if self.in_trial or again:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was requested (call between trials)."""
        if self.requested is not None:
            raise KeyboardInterrupt


def surplus_guard(study: optuna.Study, objective: Callable[[optuna.Trial], float],
                  n_trials: int,
                  stop: GracefulStop | None = None) -> Callable[[optuna.Trial], float]:
    """``objective``, except that a trial beyond the study's total ends at once as surplus.

    A trial is surplus when ``n_trials`` finished, running or queued trials were created
    before it: two workers that both saw room for one more trial then keep only the earlier
    one. Queued (WAITING) trials count because some worker will run them: a retry enqueued
    while another worker was creating a fresh trial must not let both run.
    """
    def guarded(trial: optuna.Trial) -> float:
        live = study.get_trials(deepcopy=False,
                                states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
        if sum(1 for t in live if t.number < trial.number) >= n_trials:
            trial.set_user_attr("fail_reason", "surplus: the study already had its trials")
            raise SurplusTrial(f"trial {trial.number} not needed: the study has its "
                               f"{n_trials} trials")
        try:
            if stop is not None:
                stop.in_trial = True
                stop.check()  # a signal that came while Optuna created this trial
            return objective(trial)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: Optuna records the trial as FAIL; say why and queue the same
            # parameters so that rerunning the command runs this configuration first.
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)"
                                + ("; queued again" if trial.params else " before it began"))
            if trial.params:
                study.enqueue_trial(dict(trial.params), user_attrs={
                    "retry_of": trial.number, "retry_reason": "interrupted (Ctrl-C or SIGTERM)"})
            raise
        finally:
            if stop is not None:
                stop.in_trial = False

    return guarded


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], *,
               n_trials: int, timeout: float | None = None,
               catch: Iterable[type[Exception]] = (),
               callbacks: Iterable[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
               poll_seconds: float = 2.0, stop: GracefulStop | None = None,
               failures_in_a_row: int = FAILURES_IN_A_ROW) -> None:
    """Run trials until the study holds ``n_trials`` finished (complete + pruned) trials.

    Safe with any number of workers on one storage. Optuna's ``MaxTrialsCallback`` stops a
    worker only after its trial ends, so K workers overshoot by up to K-1; here a trial that
    would exceed the total is recognised right after it is created (by its number among the
    live and finished trials) and ends at once as FAIL ("surplus"). A worker whose remaining
    trials are all running elsewhere waits: if one of those workers dies, its trial goes
    stale, is retried, and this worker runs it. Ctrl-C/SIGTERM (``KeyboardInterrupt``) fails
    the running trial with a reason, queues its parameters again and propagates; with
    ``stop`` (a :class:`GracefulStop` in effect) a signal between trials stops before the next.
    After ``failures_in_a_row`` trials of this process failed with the same cause it raises
    :class:`RepeatedFailure` (:class:`CircuitBreaker`), leaving the study resumable.
    """
    catch = (*tuple(catch), SurplusTrial)
    deadline = None if timeout is None else time.monotonic() + timeout
    guarded = surplus_guard(study, objective, n_trials, stop)
    breaker = CircuitBreaker(failures_in_a_row)
    callbacks = [*callbacks, breaker]

    while True:
        if stop is not None:
            stop.check()
        breaker.check()
        counts = count_states(study)
        finished = sum(counts[s] for s in FINISHED)
        if finished >= n_trials:
            return
        if deadline is not None and time.monotonic() >= deadline:
            log.info("timeout reached with %d/%d trials finished", finished, n_trials)
            return
        if finished + counts[TrialState.RUNNING] >= n_trials:
            # The last trials run in other workers; wait in case one of them dies.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(poll_seconds)
            continue
        study.optimize(guarded, n_trials=1, catch=catch, callbacks=callbacks,
                       gc_after_trial=False)
