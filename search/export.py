"""Turn a trial's stored best-epoch weights into the team's ``<group>.pth``.

Nothing is retrained: every finished trial kept its checkpoint as an Optuna artifact. Export
downloads it, stamps it with the group and study, checks that it loads under
``weights_only=True`` and still scores the trial's validation metric on the study's own
split, and only then moves it into place.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState

import model as model_lib
from data import EraserSet, Split, load_data, make_split
from data.dataset import USE_DEFAULT_CACHE
from search.evaluate import predict_set
from search.study import StudyError

log = logging.getLogger(__name__)

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOLERANCE = 0.01  # bf16 on the GPU vs float32 here moves a few probabilities slightly


def check_group(group: str) -> str:
    if not GROUP_RE.match(group):
        raise StudyError(f"--group {group!r} must be a plain file name: letters, digits, '_', "
                         "'-' or '.', at most 64 characters.")
    return group


def select_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    """The best completed trial, or trial ``number`` if it completed."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match or match[0].state != TrialState.COMPLETE:
            state = match[0].state.name if match else "no such trial"
            listed = ", ".join(str(t.number) for t in complete[:20]) or "none"
            raise StudyError(f"trial {number} of study {study.study_name!r} cannot be exported "
                             f"({state}); completed trials: {listed}.")
        return match[0]
    if not complete:
        counts = ", ".join(f"{n} {s.name.lower()}" for s, n in _count(trials).items()) or "none"
        raise StudyError(f"study {study.study_name!r} has no completed trial yet (trials: "
                         f"{counts}). Let run_study.py finish at least one trial.")
    return max(complete, key=lambda t: t.value if t.value is not None else -math.inf)


def _count(trials: list[optuna.trial.FrozenTrial]) -> dict[TrialState, int]:
    out: dict[TrialState, int] = {}
    for t in trials:
        out[t.state] = out.get(t.state, 0) + 1
    return out


def fetch_checkpoint(trial: optuna.trial.FrozenTrial, artifact_dir: Path) -> dict:
    """Download the trial's checkpoint artifact and load it with ``weights_only=True``."""
    artifact_id = trial.user_attrs.get("checkpoint_artifact")
    if artifact_id is None:
        raise StudyError(f"trial {trial.number} stored no weights (it ran without an artifact "
                         "store); export another trial with --trial.")
    store = FileSystemArtifactStore(str(artifact_dir))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial.pth"
        try:
            download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))
        except (FileNotFoundError, optuna.artifacts.exceptions.ArtifactNotFound):
            raise StudyError(f"the weights of trial {trial.number} (artifact {artifact_id}) "
                             f"are not in {artifact_dir}. Pass the folder the study wrote to "
                             "with --artifact-dir.") from None
        return model_lib.load_checkpoint(path)


@dataclass
class Verification:
    metric: str
    stored: float
    measured: float
    n_val: int

    @property
    def diff(self) -> float:
        return abs(self.measured - self.stored)

    @property
    def ok(self) -> bool:
        return self.diff <= TOLERANCE


def study_data(study: optuna.Study, data_path: str | Path | None = None,
               cache_dir: str | Path | None = USE_DEFAULT_CACHE) -> tuple[EraserSet, Split]:
    """The study's data and split, re-derived and checked against the hashes it stored."""
    attrs = study.user_attrs
    path = data_path or attrs.get("data_path")
    if path is None or not Path(path).exists():
        raise StudyError(f"the study's data folder {path} is not here; pass --data.")
    labels = attrs.get("labels")
    data = load_data(path, labels, cache_dir=cache_dir)
    if data.data_hash != attrs.get("data_hash"):
        raise StudyError(f"the data at {path} differ from the data study "
                         f"{study.study_name!r} was run on (hash mismatch).")
    s = attrs["split"]
    split = make_split(data.ids, data.codes, k=s["k"], seed=s["seed"],
                       group_regex=s.get("group_regex"))
    if split.hash != attrs.get("split_hash"):
        raise StudyError("the re-derived split does not match the study's split hash.")
    return data, split


def verify(net: model_lib.InspectionModel, trial: optuna.trial.FrozenTrial, data: EraserSet,
           split: Split, metric: str) -> tuple[Verification, np.ndarray]:
    """Score ``net`` on the validation split at its stored thresholds."""
    val_ids = split.val_ids()
    probs = predict_set(net, data, val_ids)
    row = {k: i for i, k in enumerate(data.ids)}
    rows = np.array([row[k] for k in val_ids])
    metrics = model_lib.evaluate(probs, data.targets[rows], thresholds=net.thresholds)
    return Verification(metric, float(trial.value), metrics[metric], len(val_ids)), probs


def stamp(ckpt: dict, *, group: str, study: optuna.Study,
          trial: optuna.trial.FrozenTrial) -> dict:
    """Add who and what this export is to the checkpoint (plain data only)."""
    out = dict(ckpt)
    out.update(group=group, study=study.study_name, trial=trial.number,
               params=dict(trial.params), value=float(trial.value),
               exported=datetime.now(UTC).isoformat(timespec="seconds"))
    return out
