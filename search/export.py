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
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState

import model as model_lib
from data import EraserSet, Split, load_data, make_split
from data.dataset import USE_DEFAULT_CACHE
from model.checkpoint import RESERVED_KEYS
from search.evaluate import predict_set
from search.space import trial_config
from search.study import StudyError
from search.train import EpochReport, TrainData, TrainResult, train

log = logging.getLogger(__name__)

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOLERANCE = 0.01  # bf16 on the GPU vs float32 here moves a few probabilities slightly
TTA_MIN_GAIN = 0.002  # graded AP gain that makes 8x the inference cost worth it
# Entries of a trial's checkpoint that a refit recomputes rather than inherits.
REFIT_OWN = frozenset({"train_config", "augment_config", "best_epoch", "epochs_run"})


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
        if data_path:
            raise StudyError(f"the data folder {path} given with --data does not exist.")
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


def validation_targets(data: EraserSet, ids: list[str]) -> np.ndarray:
    """``(n, 2)`` [print, physical] targets of ``ids``, in that order."""
    row = {k: i for i, k in enumerate(data.ids)}
    return data.targets[np.array([row[k] for k in ids], dtype=np.int64)]


def apply_policy(ckpt: dict, probs: np.ndarray, targets: np.ndarray,
                 policy: model_lib.ThresholdPolicy) -> dict:
    """``ckpt`` with thresholds re-chosen by ``policy`` on validation predictions.

    ``val_metrics`` are recomputed at the new thresholds, so the expected precision/recall
    that ``predict.py`` prints describe the stored operating point.
    """
    thresholds = model_lib.choose_thresholds(probs, targets, policy)
    out = dict(ckpt)
    out.update(thresholds=thresholds, threshold_policy=policy.to_dict(),
               val_metrics=model_lib.evaluate(probs, targets, thresholds=thresholds))
    return out


def measure_tta(net: model_lib.InspectionModel, data: EraserSet, ids: list[str],
                probs: np.ndarray, targets: np.ndarray,
                policy: model_lib.ThresholdPolicy) -> dict:
    """Does averaging over the 8 flips/rotations help on validation? A plain dict.

    AUC-PR does not depend on thresholds; F1 is compared at the model's thresholds without
    TTA and at thresholds re-chosen (same ``policy``) on the TTA probabilities, which are
    stored as ``thresholds`` for ``predict.py --tta``. ``recommended`` when the graded AP
    gains at least :data:`TTA_MIN_GAIN`.
    """
    probs_tta = predict_set(net, data, ids, tta=True)
    plain = model_lib.evaluate(probs, targets, thresholds=net.thresholds)
    thresholds = model_lib.choose_thresholds(probs_tta, targets, policy)
    tta = model_lib.evaluate(probs_tta, targets, thresholds=thresholds)
    out: dict = {"n_val": len(ids), "min_gain": TTA_MIN_GAIN, "thresholds": thresholds}
    for key in ("graded_ap", "graded_f1", "defect_ap", "defect_f1", "defect_precision",
                "defect_recall"):
        out[key], out[f"{key}_tta"] = plain[key], tta[key]
    out["recommended"] = bool(out["graded_ap_tta"] - out["graded_ap"] >= TTA_MIN_GAIN)
    return out


def retrain_full(trial: optuna.trial.FrozenTrial, space: dict, data: EraserSet, split: Split,
                 *, device: str | torch.device = "cpu",
                 callback: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Refit the trial's configuration on train + validation for its best epoch count.

    Same configuration (replayed from the trial's parameters and the study's stored
    ``space``) and seed, early stopping off; with no validation rows left the run
    keeps its last epoch (see :func:`search.train.train`).
    """
    best_epoch = trial.user_attrs.get("best_epoch")
    if not best_epoch:
        raise StudyError(f"trial {trial.number} recorded no best epoch, so it cannot be "
                         "retrained; export it without --retrain-full.")
    try:
        config = trial_config(trial, space)
    except ValueError as exc:
        raise StudyError(f"{exc}; export it without --retrain-full.") from None
    config = replace(config, train=replace(config.train, epochs=int(best_epoch),
                                           early_stop_patience=0))
    size = config.model.input_size
    ids = split.train_ids() + split.val_ids()
    train_data = TrainData(data.images(size), data.targets, data.ids, ids, [])
    log.info("refitting trial %d on %d erasers for %d epochs", trial.number, len(ids),
             best_epoch)
    return train(config, train_data, device=device, callback=callback)


def refit_checkpoint(result: TrainResult, ckpt: dict, n_erasers: int) -> dict:
    """The checkpoint of a :func:`retrain_full` run, keeping ``ckpt``'s validated parts.

    There is no validation set left to choose thresholds on, so the trial's thresholds,
    policy, validation metrics and TTA finding are kept (they describe the trial's model, and
    ``retrained`` says so); weights, normalisation and training record are the refit's.
    """
    meta = {k: v for k, v in ckpt.items()
            if k not in RESERVED_KEYS and k not in REFIT_OWN}
    meta["retrained"] = {
        "on": "train+validation", "n_erasers": n_erasers,
        "epochs": result.epochs_run, "seed": result.config.train.seed,
        "from_trial": ckpt.get("trial"), "seconds": round(result.seconds, 1),
        "note": "thresholds, validation metrics and the TTA finding come from the trial's "
                "model (validated before the refit); this model has no validation set.",
    }
    refit = replace(result, thresholds=dict(ckpt["thresholds"]),
                    metrics=dict(ckpt.get("val_metrics", {})))
    out = refit.checkpoint(**meta)
    out["threshold_policy"] = ckpt.get("threshold_policy", out["threshold_policy"])
    return out
