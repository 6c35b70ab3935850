"""What ``run_study.py`` (and the notebook) do, as plain functions.

``prepare`` loads and validates the data, makes the split, opens the storage and creates or
resumes the study, in that order, so that any problem surfaces before a single epoch runs.
``run`` then trains trials until the study holds its total.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from data import EraserSet, Split, k_for_fraction, load_data, make_split
from data.cache import Progress
from data.dataset import USE_DEFAULT_CACHE
from data.kinds import assess
from data.labels import BINARY
from data.noise import flagged_hash
from model.pretrained import WeightFinder
from search.blindness import BlindnessWatch, chance_of
from search.export import exportable
from search.objective import Objective, TrialFailed
from search.plan import Plan
from search.portfolio import enqueue_portfolio
from search.space import SearchSpace
from search.study import (
    GracefulStop,
    StudyError,
    artifact_dir_for,
    create_or_resume,
    make_pruner,
    make_sampler,
    open_storage,
    run_trials,
    sqlite_file_missing,
    storage_for_commands,
    study_names,
)
from training.loop import EpochReport, TrainResult

log = logging.getLogger(__name__)

METRIC_NAMES = {"graded_ap": "validation graded AUC-PR", "defect_ap": "validation defect AUC-PR",
                "graded_f1": "validation graded F1"}
TEST_FRACTION = 0.15
MIN_FOR_TEST = 500
Planner = Callable[[int, int, str], Plan]  # (n_train, n_val, label kind) -> plan


@dataclass
class Session:
    """A study bound to its data, split, search space and artifact folder."""

    study: optuna.Study
    data: EraserSet
    split: Split
    space: SearchSpace
    storage_url: str
    artifact_dir: Path
    resumed: bool
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the shipped model cannot do
    flagged: tuple[str, ...] = ()  # suspected mislabels whose loss weight the trials set
    plan: Plan | None = None  # how a new study's space was chosen (None: given, or resumed)

    @property
    def artifact_store(self) -> FileSystemArtifactStore:
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(self.artifact_dir))

    def dashboard_command(self) -> str:
        return (f"optuna-dashboard {storage_for_commands(self.storage_url)} "
                f"--artifact-dir {_short(self.artifact_dir)}")


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def study_attrs(data: EraserSet, split: Split, space: SearchSpace, data_path: str | Path,
                labels: Sequence[str | Path] | None, flagged: Sequence[str] = (),
                test_fraction: float = 0.0) -> dict:
    """What a study remembers about how it was made (shown in the dashboard, checked on
    resume, used by export). ``flagged``: suspected mislabels (``--flagged``), bound by hash
    and kept (the report shows them)."""
    return {
        "flagged_hash": flagged_hash(flagged),
        "n_flagged": len(set(flagged)),
        "flagged": sorted(set(flagged)),
        "data_hash": data.data_hash,
        "split_hash": split.hash,
        "split": {"k": split.k, "fold": 0, "seed": split.seed,
                  "group_regex": split.group_regex, "n_val": len(split.val_ids()),
                  "n_train": len(split.train_ids()), "n_test": len(split.test),
                  "test_fraction": test_fraction},
        "data": data.summary(),
        "data_path": str(Path(data_path).resolve()),
        "labels": [str(Path(p).resolve()) for p in labels] if labels else None,
        "space": space.to_dict(),
    }


# About 100 lines on purpose: the order is the contract (data, split, storage, plan, study,
# split artifact, portfolio) so that every problem surfaces before anything is written.
def prepare(data_path: str | Path, labels: Sequence[str | Path] | None = None, *,
            study_name: str, storage_url: str, space: SearchSpace | Planner,
            sampler: str = "tpe", pruner: str = "hyperband", seed: int = 0,
            val_fraction: float = 0.2, test_fraction: float | None = 0.0,
            group_regex: str | None = None, artifact_dir: str | Path | None = None,
            cache_dir: str | Path | None = USE_DEFAULT_CACHE, heartbeat: int = 30,
            worker_index: int = 0, progress: Progress | None = None,
            flagged: Sequence[str] = (), dry_run: bool = False,
            portfolio: bool = False) -> Session:
    """Validate the data, split it, open the storage and create or resume the study.

    ``space`` is the search space, or a planner that chooses it for a new study from the
    split's sizes (``search.plan``; a resumed study keeps the space it was created with and
    the planner is not called). ``test_fraction``: share of erasers set aside before the
    split for an unbiased test score (None: :func:`auto_test_fraction`). ``portfolio``
    queues the proven starting configurations (``search.portfolio``) as a new study's first
    trials. ``flagged``: ids of suspected mislabels (``label_issues.py``) whose loss weight
    the trials use; the list is part of what the study is bound to. ``dry_run`` checks all
    of that against the storage but writes nothing to it: a study that does not exist yet
    is made in memory only.
    Raises ``DataError``, ``SplitError`` or ``StudyError`` with a user-facing message.
    """
    data = load_data(data_path, labels, cache_dir=cache_dir, progress=progress)
    notes: list[str] = []
    flagged = _known_flagged(flagged, data, notes)
    if test_fraction is None:
        test_fraction = auto_test_fraction(len(data))
    split = make_split(data.ids, data.codes, k=k_for_fraction(val_fraction), seed=seed,
                       group_regex=group_regex, test_fraction=test_fraction)
    teach = assess(data.targets_of(split.train_ids()), data.label_kind)
    if not teach.ok:
        raise StudyError(" ".join(teach.errors) + " Nothing was trained.")
    # without both defective and good erasers the validation metric is undefined in every trial
    checked = assess(data.targets_of(split.val_ids()), data.label_kind, minimum=1,
                     where="the validation part")
    if not checked.ok:
        raise StudyError(f"{checked.errors[0].split(': ')[0]}: no trial could be scored. Use a "
                         "larger --val-fraction, another --seed, or (with --group-regex) packs "
                         "that mix good and defective erasers.")
    if split.test:
        notes.append(f"{len(split.test)} erasers ({test_fraction:.0%}) set aside as the test "
                     "split: no trial, threshold or epoch choice sees them; export_best.py "
                     "scores the exported model on them once")
    storage = _storage(storage_url, study_name, heartbeat, dry_run)
    plan = None
    if not isinstance(space, SearchSpace):  # a planner: only a new study needs one
        if study_name in study_names(storage):
            space = _stored_space(optuna.load_study(study_name=study_name, storage=storage),
                                  study_name, storage_url)
        else:
            plan = space(len(split.train_ids()), len(split.val_ids()), data.label_kind)
            space = plan.space
    if data.label_kind == BINARY and (space.tasks != ("binary",) or space.metric != "defect_ap"):
        space = SearchSpace.from_dict({**space.to_dict(), "tasks": ("binary",),
                                       "metric": "defect_ap"})
        notes.append("only binary labels: searching the binary head on defect AUC-PR")
    attrs = study_attrs(data, split, space, data_path, labels, flagged, test_fraction)
    # the kinds the training part holds too few of: export carries them into the model card
    attrs["ungradable"] = {k: teach.counts[k] for k in teach.ungradable}
    if plan is not None:
        attrs["plan"] = plan.to_dict()
    # Each worker gets its own sampler seed: identical seeds would propose identical trials.
    study, resumed = create_or_resume(
        study_name, storage, sampler=make_sampler(sampler, seed + worker_index),
        pruner=make_pruner(pruner, space.epochs), attrs=attrs)
    if not resumed:  # optuna-dashboard labels its charts with it ("Objective 0" otherwise)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES.get(space.metric, space.metric)])
    if resumed and study.user_attrs.get("flagged_hash") != flagged_hash(flagged):
        raise StudyError(
            f"study {study_name!r} was run with {study.user_attrs.get('n_flagged', 0)} flagged "
            f"erasers (--flagged), this run gives {len(flagged)} others. Resume it with the "
            "same --flagged list (or none, if it had none), or start a new study.")
    if resumed:
        stored = _stored_space(study, study_name, storage_url)
        if stored != space:
            notes.append("resuming: the study keeps the search space it was created with")
        space = stored
        # The pruner's budget must match the stored space, not the flags of this run.
        study.pruner = make_pruner(pruner, space.epochs)
        # A seeded sampler replays its first (random start-up) proposals in every process, so
        # a resume, a --workers child or another machine would rerun configurations the study
        # already has. Only the process that creates the study uses --seed; the others draw
        # a fresh seed (runs sharing a study are not reproducible anyway: timing decides).
        study.sampler = make_sampler(sampler, None)
    art_dir = Path(artifact_dir) if artifact_dir else artifact_dir_for(storage_url)
    session = Session(study=study, data=data, split=split, space=space,
                      storage_url=storage_url, artifact_dir=art_dir.resolve(),
                      resumed=resumed, notes=notes, warnings=teach.warnings(),
                      flagged=flagged, plan=plan)
    if dry_run:
        return session
    if not resumed:
        try:
            _save_split(session)
        except OSError as exc:  # a study without its split would be resumed half-made
            optuna.delete_study(study_name=study_name, storage=storage)
            raise StudyError(f"cannot write the study's split into {session.artifact_dir} "
                             f"({exc.strerror or exc}); study {study_name!r} was not created. "
                             "Pass an --artifact-dir you can write to.") from None
        if portfolio:
            queued = enqueue_portfolio(study, space)
            if queued:
                notes.append(f"the first {len(queued)} trials are proven starting points "
                             f"({', '.join(queued)}); the sampler takes over after them")
    return session


def space_problem(space: SearchSpace) -> str | None:
    """What in ``space`` no trial could run with (``None``: it can run)."""
    for name, values, low in (("epochs", (space.epochs,), 1), ("patience", (space.patience,), 0),
                              ("sizes", space.sizes, 8), ("base_widths", space.base_widths, 1),
                              ("batch_sizes", space.batch_sizes, 1)):
        if not values or any(not isinstance(v, int) or v < low for v in values):
            return f"{name} {list(values)} (each must be a whole number of at least {low})"
    if space.min_recall is not None and not 0.0 < space.min_recall <= 1.0:
        return f"min_recall {space.min_recall} (a recall in (0, 1])"
    return None


def _stored_space(study: optuna.Study, name: str, url: str) -> SearchSpace:
    """The search space a study was created with, or :class:`StudyError` saying what to do
    when it cannot run (a study made by an older version, or with flags that were not
    checked then): it is part of the study, so no flag of a resume can change it."""
    stored = study.user_attrs.get("space")
    try:
        space = SearchSpace.from_dict(stored) if isinstance(stored, dict) else None
        problem = "no search space" if space is None else space_problem(space)
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    if problem:
        raise StudyError(
            f"study {name!r} holds a search space that cannot run: {problem}. A study keeps "
            "the space it was created with, so start a new one with another --study name (or "
            f"remove this one: optuna delete-study --study-name {name} --storage "
            f"{storage_for_commands(url)}).")
    return space


def auto_test_fraction(n_erasers: int) -> float:
    """The test split's default share: :data:`TEST_FRACTION` from :data:`MIN_FOR_TEST`
    erasers, none below (the validation split needs them more)."""
    return TEST_FRACTION if n_erasers >= MIN_FOR_TEST else 0.0


def _storage(url: str, study_name: str, heartbeat: int,
             dry_run: bool) -> optuna.storages.BaseStorage:
    """The study's storage; for a dry run of a study that does not exist yet, a throwaway
    in-memory one (the URL is still checked, and no SQLite file is created)."""
    memory = optuna.storages.InMemoryStorage
    if dry_run and sqlite_file_missing(url):
        return memory()
    storage = open_storage(url, heartbeat_interval=heartbeat)
    if dry_run and study_name not in study_names(storage):
        return memory()
    return storage


def _known_flagged(flagged: Sequence[str], data: EraserSet, notes: list[str]
                   ) -> tuple[str, ...]:
    """The flagged ids that are erasers of ``data`` (sorted); notes the others."""
    if not flagged:
        return ()
    have = set(data.ids)
    known = tuple(sorted(set(flagged) & have))
    unknown = sorted(set(flagged) - have)
    if not known:
        raise StudyError(f"none of the {len(set(flagged))} flagged ids (e.g. {unknown[0]}) is "
                         "an eraser of these data; make the list on the same data with "
                         "`python label_issues.py`.")
    if unknown:
        notes.append(f"{len(unknown)} flagged id(s) are not in the data and are ignored "
                     f"(e.g. {', '.join(unknown[:3])})")
    notes.append(f"{len(known)} flagged erasers: the search tunes their loss weight "
                 "(flagged_weight, 0 = dropped)")
    return known


def _save_split(session: Session) -> None:
    """Keep the split's ids with the study (a study artifact) for reports and audits."""
    tmp = session.artifact_dir / f".split-{session.split.hash}.json"
    session.split.save(tmp)
    try:
        artifact_id = upload_artifact(artifact_store=session.artifact_store, file_path=str(tmp),
                                      study_or_trial=session.study, mimetype="application/json")
        session.study.set_user_attr("split_artifact", artifact_id)
    finally:
        tmp.unlink(missing_ok=True)


def make_objective(session: Session, device: torch.device, *,
                   on_epoch: Callable[[int, EpochReport], None] | None = None,
                   on_result: Sequence[Callable[[optuna.Trial, TrainResult], None]] = (),
                   on_stop: Sequence[Callable[[optuna.Trial, str, list[dict]], None]] = (),
                   flagged: Sequence[str] = (), deadline: float | None = None,
                   weights: WeightFinder | None = None) -> Objective:
    """The study's objective; ``on_result`` hooks run after each finished trial is recorded
    (the dashboard's notes and figures: ``reporting.trial_report.dashboard_hook``), the
    ``on_stop`` hooks after a trial is pruned or fails (its ``stopped`` method). A trial
    still running at ``deadline`` (``time.monotonic()``) ends after its epoch, keeping its
    best epoch. Pretrained backbones take their ImageNet weights from ``weights`` (default:
    ``ERASER_WEIGHTS`` and timm's download cache)."""
    return Objective(session.data, session.split, session.space, device=device,
                     artifact_store=session.artifact_store, flagged=flagged or session.flagged,
                     on_epoch=on_epoch, on_result=on_result, on_stop=on_stop,
                     deadline=deadline, weights=weights)


def run(session: Session, objective: Objective, *, n_trials: int,
        timeout: float | None = None,
        on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
        stop: GracefulStop | None = None,
        on_notice: Callable[[str], None] | None = None) -> None:
    """Train trials until the study has ``n_trials`` finished ones (a study-wide total).

    With ``stop`` (a :class:`~search.study.GracefulStop` in effect), Ctrl-C/SIGTERM fail only
    the running trial (queued again) and raise ``KeyboardInterrupt`` at a safe point. With
    ``on_notice`` the study watches for a defect kind it stays blind to
    (:class:`~search.blindness.BlindnessWatch`), says so there and queues what can see it."""
    callbacks = [on_trial] if on_trial else []
    if on_notice is not None and session.data.targets is not None:
        callbacks.append(BlindnessWatch(session.space, chance_of(session.data, session.split),
                                        on_notice))
    run_trials(session.study, objective, n_trials=n_trials, timeout=timeout,
               catch=(TrialFailed,), callbacks=callbacks, stop=stop)


def best_trials(study: optuna.Study, top: int = 5) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` exportable trials (completed, or cut short by the budget), best first."""
    done = [t for t in study.get_trials(deepcopy=False)
            if exportable(t) and math.isfinite(t.value)]
    return sorted(done, key=lambda t: t.value, reverse=True)[:top]
