"""Turn a trial's stored best-epoch weights into the team's ``<group>.pth``.

Nothing is retrained: every finished trial kept its checkpoint as an Optuna artifact. Export
downloads it, stamps it with the group and study, checks that it loads under
``weights_only=True`` and still scores the trial's validation metric on the study's own
split, and only then moves it into place. :func:`export_trial` is the whole export as
``export_best.py`` runs it (ensemble of the best trials, thresholds, test-time augmentation,
refit, ONNX and ``.pt2``, model card).
"""

from __future__ import annotations

import json
import logging
import math
import os
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
from data import DataError, EraserSet, Split, format_problems, load_data, make_split
from data.dataset import USE_DEFAULT_CACHE
from data.pipeline import TrainData
from model.checkpoint import RESERVED_KEYS
from model.ensemble import EnsembleModel
from model.fileio import write_text
from model.metrics import score as metric_score
from model.onnx import DEFAULT_TOLERANCE, random_images
from model.pretrained import WeightFinder, WeightsError
from model.pt2 import Pt2ExportError, compare_pt2, export_pt2, load_pt2
from search.ensemble import DEFAULT_POOL, EnsembleChoice, blend, choose_ensemble
from search.space import trial_config
from search.study import StudyError
from training.loop import EpochReport, NonFiniteLossError, TrainResult, train
from training.scoring import predict_set

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


def exportable(trial: optuna.trial.FrozenTrial) -> bool:
    """Completed, or cut short by the study's budget (``partial``: PRUNED for the sampler,
    whose weights and validation scores are kept like a completed trial's)."""
    return trial.value is not None and (trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and "partial" in trial.user_attrs))


def select_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    """The best exportable trial (:func:`exportable`: a partial one too, when it is the best
    on validation), or trial ``number`` if it is exportable."""
    trials = study.get_trials(deepcopy=False)
    candidates = [t for t in trials if exportable(t)]
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match or not exportable(match[0]):
            state = match[0].state.name if match else "no such trial"
            listed = ", ".join(str(t.number) for t in candidates[:20]) or "none"
            raise StudyError(f"trial {number} of study {study.study_name!r} cannot be exported "
                             f"({state}); completed trials: {listed}.")
        return match[0]
    if not candidates:
        counts = ", ".join(f"{n} {s.name.lower()}" for s, n in _count(trials).items()) or "none"
        raise StudyError(f"study {study.study_name!r} has no completed trial yet (trials: "
                         f"{counts}). Let run_study.py finish at least one trial.")
    return max(candidates, key=lambda t: t.value)


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
        try:
            return model_lib.load_checkpoint(path)
        except model_lib.CheckpointError as exc:
            # Its message names the temporary copy and says to re-export: neither helps here.
            reason = str(exc).replace(f"Model file {path} ", "").split(". ")[0].rstrip(".")
            raise StudyError(
                f"the stored weights of trial {trial.number} ({Path(artifact_dir) / artifact_id}"
                f") cannot be used: the file {reason}. It was changed or damaged after the "
                "trial ran; export another trial with --trial, or restore the artifact folder "
                "from a backup.") from None


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
                       group_regex=s.get("group_regex"),
                       test_fraction=s.get("test_fraction", 0.0))
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
    if study.user_attrs.get("ungradable"):  # kinds its training part held too few of
        out["ungradable"] = dict(study.user_attrs["ungradable"])
    if "partial" in trial.user_attrs:  # cut short by the budget, yet the best on validation
        out["partial"] = trial.user_attrs["partial"]
    return out


def validation_targets(data: EraserSet, ids: list[str]) -> np.ndarray:
    """``(n, 2)`` [print, physical] targets of ``ids``, in that order."""
    return data.targets_of(ids)


def test_metrics(net: model_lib.InspectionModel, data: EraserSet, split: Split
                 ) -> dict[str, float] | None:
    """``net``'s metrics on the split's test erasers at its shipped thresholds (``n`` = how
    many); None when the study set none aside."""
    ids = split.test_ids()
    if not ids:
        return None
    probs = predict_set(net, data, ids)
    metrics = model_lib.evaluate(probs, validation_targets(data, ids), thresholds=net.thresholds)
    return {"n": len(ids), **{k: v for k, v in metrics.items() if math.isfinite(v)}}


def best_test_metrics(study: optuna.Study, data: EraserSet, split: Split, artifact_dir: Path
                      ) -> tuple[dict[str, float], int, dict[str, float]] | None:
    """The best trial's test metrics (:func:`test_metrics`), its number, and each class's
    share of the test erasers (what a guessing model's AUC-PR would be); None without a
    test split or a completed trial with weights."""
    try:
        trial = select_trial(study)
        net = model_lib.model_from_checkpoint(fetch_checkpoint(trial, artifact_dir),
                                              f"trial {trial.number}")
    except (StudyError, model_lib.CheckpointError):
        return None
    metrics = test_metrics(net, data, split)
    if metrics is None:
        return None
    truth = model_lib.targets_to_truth(validation_targets(data, split.test_ids()))
    prevalence = {n: float(truth[:, i].mean()) for i, n in enumerate(model_lib.PROB_NAMES)}
    return metrics, trial.number, prevalence


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
                 callback: Callable[[EpochReport], None] | None = None,
                 weights: WeightFinder | None = None) -> TrainResult:
    """Refit the trial's configuration on train + validation for its best epoch count.

    Same configuration (replayed from the trial's parameters and the study's stored
    ``space``) and seed, early stopping off; with no validation rows left the run
    keeps its last epoch (see :func:`training.loop.train`).
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
    try:
        return train(config, train_data, device=device, callback=callback, weights=weights)
    except WeightsError as exc:
        raise StudyError(f"{exc}; or export without --retrain-full.") from None


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


# ---------------------------------------------------------------------------------------------
# the whole export, as export_best.py runs it

ONNX_SAMPLES = 256  # validation erasers the ONNX and .pt2 files are checked on (raw, full size)
Say = Callable[[str, str], None]  # (tag, message): a line of progress for the user
Standalone = tuple[Path, list[model_lib.OnnxCheck]]  # a file that runs without this repository
CardWriter = Callable[[dict, Path, list[Standalone]], str]
Shipped = model_lib.InspectionModel | EnsembleModel


class ExportError(Exception):
    """The export cannot be completed; nothing was written (message is user-facing)."""


@dataclass(frozen=True)
class ExportOptions:
    """What ``export_best.py`` asks for (see its ``--help``)."""

    group: str
    out_dir: Path
    artifact_dir: Path
    data_path: str | Path | None = None
    cache_dir: str | Path | None = USE_DEFAULT_CACHE
    verify: bool = True
    min_recall: float | None = None
    retrain_full: bool = False
    device: str | torch.device = "cpu"
    onnx: bool = False
    pt2: bool = True
    onnx_tolerance: float = DEFAULT_TOLERANCE
    weights: WeightFinder | None = None  # a pretrained backbone's ImageNet weights (refit)
    ensemble: int = DEFAULT_POOL  # the best trials an ensemble is chosen from; < 2: none


@dataclass
class Exported:
    """The files written (the ``.pth`` first) and the model as a user loads it back."""

    paths: list[Path]
    net: Shipped
    standalone: list[Standalone]


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, opts: ExportOptions, *,
                 card: CardWriter, say: Say = lambda tag, message: None,
                 on_refit_epoch: Callable[[EpochReport], None] | None = None) -> Exported:
    """Export ``trial`` (or, when it beats it on validation by more than the noise, an
    ensemble of the best trials led by it) to ``<group>.pth``, ``.pt2`` (and ``.onnx``) plus
    its model card in ``opts.out_dir``: everything is staged in a temporary folder there and
    moved into place only once every check passed (the ``.pth`` last). Raises
    :class:`ExportError`."""
    metric = study.user_attrs.get("space", {}).get("metric", "graded_ap")
    try:
        ckpt = stamp(fetch_checkpoint(trial, opts.artifact_dir), group=opts.group, study=study,
                     trial=trial)
    except (StudyError, model_lib.CheckpointError) as exc:
        raise ExportError(str(exc)) from None
    if "partial" in ckpt:
        say("partial", f"trial {trial.number} was {ckpt['partial']}: the best validation score "
            "all the same, so it ships (it is not a finished run; the sampler ranked it so)")
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=opts.out_dir) as tmp:
        staged = Path(tmp) / f"{opts.group}.pth"
        net = _stage(ckpt, staged)
        samples = None
        if opts.verify:
            ckpt, samples, data, split = _verified(ckpt, net, study, trial, metric, opts, say,
                                                   on_refit_epoch)
            net = _stage(ckpt, staged)  # again, with what was added since
            test = test_metrics(net, data, split)  # once, on the model that ships
            if test is not None:
                ckpt["test_metrics"] = test
                net = _stage(ckpt, staged)
                say("test", f"{test['n']} erasers the study never used: graded AUC-PR "
                    f"{test.get('graded_ap', math.nan):.4f}, defect AUC-PR "
                    f"{test.get('defect_ap', math.nan):.4f}, graded F1 "
                    f"{test.get('graded_f1', math.nan):.4f} at the shipped thresholds"
                    + _single_test(ckpt))
        files = [staged]
        standalone: list[Standalone] = []
        for fmt in [f for f in FORMATS if getattr(opts, f.option)]:
            standalone.append(_standalone(fmt, net, Path(tmp) / f"{opts.group}{fmt.suffix}",
                                          samples, int(ckpt.get("source_size", 310)),
                                          opts.onnx_tolerance, say))
            files.append(standalone[-1][0])
        text = card(ckpt, staged, standalone)
        files.append(write_text(Path(tmp) / f"{opts.group}.md", text))
        for path in files[::-1]:  # the .pth last: it is the one that counts
            os.replace(path, opts.out_dir / path.name)
    return Exported(paths=[opts.out_dir / p.name for p in files], net=net,
                    standalone=[(opts.out_dir / p.name, c) for p, c in standalone])


def _single_test(ckpt: dict) -> str:
    """``; single best ...`` when an ensemble ships: the two side by side."""
    single = ckpt.get("ensemble", {}).get("single_test_metrics")
    if not single:
        return ""
    return (f" (the single best trial alone: graded AUC-PR {single.get('graded_ap', math.nan):.4f}"
            f", defect AUC-PR {single.get('defect_ap', math.nan):.4f})")


def _stage(ckpt: dict, path: Path) -> Shipped:
    """Save ``ckpt`` to ``path`` and load it back the way a user would (weights_only=True)."""
    try:
        return model_lib.load(model_lib.save_checkpoint(ckpt, path))
    except model_lib.CheckpointError as exc:
        raise ExportError(f"the exported file does not load back: {exc}") from None


def _verified(ckpt: dict, net: model_lib.InspectionModel, study: optuna.Study,
              trial: optuna.trial.FrozenTrial, metric: str, opts: ExportOptions, say: Say,
              on_refit_epoch: Callable[[EpochReport], None] | None
              ) -> tuple[dict, np.ndarray | None, EraserSet, Split]:
    """Re-score the staged model on the study's validation split, then the steps that need
    those predictions: ensemble, thresholds, TTA, refit, ONNX and ``.pt2`` samples."""
    try:
        data, split = study_data(study, opts.data_path, cache_dir=opts.cache_dir)
        check, probs = verify(net, trial, data, split, metric)
    except DataError as exc:
        raise ExportError(f"the study's data cannot be loaded to verify the export:\\n"
                          f"{format_problems(exc.problems)}\\nPass --data, or --no-verify."
                          ) from None
    except StudyError as exc:
        raise ExportError(f"{exc} Or skip the check with --no-verify.") from None
    say("verify", f"{metric} on {check.n_val} validation erasers: {check.measured:.4f} "
        f"(trial recorded {check.stored:.4f}, difference {check.diff:.4f})")
    if not check.ok:
        raise ExportError(f"the exported model scores {check.measured:.4f}, not the trial's "
                          f"{check.stored:.4f}; nothing was written. Was the study trained on "
                          "other data?")
    val_ids = split.val_ids()
    targets = validation_targets(data, val_ids)
    shipped: Shipped = net
    if opts.ensemble > 1 and not opts.retrain_full:
        found = _ensemble(ckpt, probs, study, trial, metric, opts, data, val_ids, say)
        if found is not None:
            ckpt, shipped, probs = found
            single = test_metrics(net, data, split)
            if single is not None:
                ckpt["ensemble"]["single_test_metrics"] = single
    if opts.min_recall is not None:
        ckpt = apply_policy(ckpt, probs, targets,
                            model_lib.ThresholdPolicy("min_recall", opts.min_recall))
        shipped.thresholds = dict(ckpt["thresholds"])
    ckpt["tta"] = measure_tta(shipped, data, val_ids, probs, targets,
                              model_lib.ThresholdPolicy.from_dict(ckpt["threshold_policy"]))
    tta = ckpt["tta"]
    verdict = ("recommended: predict.py --tta" if tta["recommended"]
               else "not worth 8x the inference cost")
    say("tta", f"8 flips/rotations on {tta['n_val']} validation erasers: graded AP "
        f"{tta['graded_ap']:.4f} -> {tta['graded_ap_tta']:.4f}, defect AP "
        f"{tta['defect_ap']:.4f} -> {tta['defect_ap_tta']:.4f} ({verdict})")
    if opts.retrain_full:
        n = len(split.train_ids()) + len(split.val_ids())
        say("refit", f"trial {trial.number}'s configuration on train+validation ({n} erasers, "
            f"{trial.user_attrs.get('best_epoch')} epochs, seed kept)")
        try:
            result = retrain_full(trial, study.user_attrs.get("space", {}), data, split,
                                  device=opts.device, callback=on_refit_epoch,
                                  weights=opts.weights)
        except (StudyError, NonFiniteLossError) as exc:
            raise ExportError(f"the refit on train+validation failed: {exc} Nothing was "
                              "written.") from None
        say("refit", f"done in {result.seconds:.0f} s; thresholds and validation metrics are "
            "the trial's (no validation set is left to choose them on)")
        ckpt = refit_checkpoint(result, ckpt, n)
    samples = (data.images(None, val_ids[:ONNX_SAMPLES]).transpose(0, 2, 3, 1)
               if opts.onnx or opts.pt2 else None)
    return ckpt, samples, data, split


# ---------------------------------------------------------------------------------------------
# an ensemble of the best trials

def ensemble_pool(study: optuna.Study, best: optuna.trial.FrozenTrial, size: int
                  ) -> list[optuna.trial.FrozenTrial]:
    """``best`` and the next best exportable trials with weights, ``size`` at most."""
    others = [t for t in study.get_trials(deepcopy=False)
              if exportable(t) and t.number != best.number and math.isfinite(t.value)
              and "checkpoint_artifact" in t.user_attrs]
    others.sort(key=lambda t: t.value, reverse=True)
    return [best, *others[:max(size - 1, 0)]]


def stored_val_probs(trial: optuna.trial.FrozenTrial, artifact_dir: Path,
                     val_ids: list[str]) -> np.ndarray | None:
    """The validation probabilities the trial stored at its best epoch, in ``val_ids``
    order; None when it stored none (older studies) or for other erasers."""
    artifact_id = trial.user_attrs.get("val_probs_artifact")
    if artifact_id is None:
        return None
    store = FileSystemArtifactStore(str(artifact_dir))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_probs.json"
        try:
            download_artifact(artifact_store=store, artifact_id=artifact_id,
                              file_path=str(path))
            stored = json.loads(path.read_text())
        except (FileNotFoundError, ValueError, optuna.artifacts.exceptions.ArtifactNotFound):
            return None
    if (stored.get("prob_names") != list(model_lib.PROB_NAMES)
            or sorted(stored.get("ids", [])) != sorted(val_ids)):
        return None
    row = {k: i for i, k in enumerate(stored["ids"])}
    probs = np.asarray(stored["probs"], dtype=np.float64)
    return probs[[row[k] for k in val_ids]]


def _pool_probs(pool: list[optuna.trial.FrozenTrial], best_probs: np.ndarray,
                artifact_dir: Path, data: EraserSet, val_ids: list[str]) -> list[np.ndarray]:
    """Validation probabilities of the pool (the best's as just measured): stored by the
    trial when it did, else predicted with its weights."""
    out = [np.asarray(best_probs, dtype=np.float64)]
    for t in pool[1:]:
        probs = stored_val_probs(t, artifact_dir, val_ids)
        if probs is None:
            net = model_lib.model_from_checkpoint(fetch_checkpoint(t, artifact_dir),
                                                  f"trial {t.number}")
            probs = predict_set(net, data, val_ids).astype(np.float64)
        out.append(probs)
    return out


def _ensemble(ckpt: dict, probs: np.ndarray, study: optuna.Study,
              trial: optuna.trial.FrozenTrial, metric: str, opts: ExportOptions,
              data: EraserSet, val_ids: list[str], say: Say
              ) -> tuple[dict, EnsembleModel, np.ndarray] | None:
    """The ensemble's checkpoint, model and validation probabilities when one beats
    ``trial`` alone by more than the noise of the validation split; else None."""
    pool = ensemble_pool(study, trial, opts.ensemble)
    if len(pool) < 2:
        return None
    targets = validation_targets(data, val_ids)
    try:
        pool_probs = _pool_probs(pool, probs, opts.artifact_dir, data, val_ids)
    except (StudyError, model_lib.CheckpointError) as exc:
        say("ensemble", f"skipped: {exc}")
        return None
    choice = choose_ensemble(pool_probs, targets, metric)
    say("ensemble", choice.describe(metric))
    if not choice.chosen:
        return None
    members = [pool[i] for i in choice.members]
    ckpt = ensemble_checkpoint(ckpt, [fetch_checkpoint(t, opts.artifact_dir) for t in members],
                               members, choice, metric,
                               blend(pool_probs, choice.members, choice.weights), targets)
    ensemble = model_lib.model_from_checkpoint(ckpt, "the ensemble")
    measured = predict_set(ensemble, data, val_ids)
    check = metric_score(measured, targets, metric)
    parts = ", ".join(f"{w:.2f} x trial {t.number}"
                      for t, w in zip(members, choice.weights, strict=True))
    say("ensemble", f"{parts}: {metric} {check:.4f} on validation as shipped")
    if abs(check - choice.score) > TOLERANCE:
        raise ExportError(f"the ensemble scores {check:.4f} on validation, not the "
                          f"{choice.score:.4f} it was chosen with; nothing was written. Export "
                          "the single best with --ensemble off.")
    return ckpt, ensemble, measured


def ensemble_checkpoint(best: dict, members: list[dict], trials: list[optuna.trial.FrozenTrial],
                        choice: EnsembleChoice, metric: str, probs: np.ndarray,
                        targets: np.ndarray) -> dict:
    """The ensemble's checkpoint: the members' own checkpoints, weights, thresholds chosen
    on the blended validation probabilities with the best trial's policy, and the best's
    stamp (group, study, data and split hashes)."""
    policy = model_lib.ThresholdPolicy.from_dict(best["threshold_policy"])
    thresholds = model_lib.choose_thresholds(probs, targets, policy)
    keep = ("group", "study", "trial", "exported", "data_hash", "split_hash", "ungradable")
    meta = {k: best[k] for k in keep if k in best}
    meta["value"] = choice.score
    meta["ensemble"] = {
        "trials": [t.number for t in trials], "weights": list(choice.weights),
        "metric": metric, "score": choice.score, "honest": choice.honest,
        "single": choice.single, "noise": choice.noise, "pool": choice.pool,
        "single_val_metrics": dict(best.get("val_metrics", {})),
        "partial": {str(t.number): t.user_attrs["partial"] for t in trials
                    if "partial" in t.user_attrs},
    }
    return model_lib.make_ensemble_checkpoint(
        members, list(choice.weights), thresholds=thresholds, threshold_policy=policy,
        metrics=model_lib.evaluate(probs, targets, thresholds=thresholds), **meta)


# ---------------------------------------------------------------------------------------------
# the files a grader runs without this repository

@dataclass(frozen=True)
class _Format:
    """A stand-alone export: how it is written, opened and compared with PyTorch."""

    suffix: str
    option: str  # the ExportOptions flag that asks for it
    runtime: str
    write: Callable[[Shipped, Path], Path]
    open: Callable[[Path], object]
    compare: Callable[..., model_lib.OnnxCheck]
    errors: tuple[type[Exception], ...]
    without: str  # how to export without it


FORMATS = (
    _Format(".pt2", "pt2", "torch.export", export_pt2, lambda p: load_pt2(p)[0], compare_pt2,
            (Pt2ExportError,), "export with --no-pt2 to get the .pth alone"),
    # looked up at call time: model's names are lazy (PEP 562), and tests replace them
    _Format(".onnx", "onnx", "onnxruntime", lambda net, p: model_lib.export_onnx(net, p),
            lambda p: model_lib.onnx_session(p), lambda *a, **k: model_lib.compare_onnx(*a, **k),
            (model_lib.OnnxExportError,), "export without --onnx to get the .pth alone"),
)


def _standalone(fmt: _Format, net: Shipped, path: Path, samples: np.ndarray | None,
                source_size: int, tolerance: float, say: Say) -> Standalone:
    """Export ``net`` in ``fmt`` and check it against PyTorch on random and validation
    erasers."""
    try:
        path = fmt.write(net, path)
        runner = fmt.open(path)
        checks = [fmt.compare(net, runner, random_images(4, source_size, seed=1),
                              name="random", tolerance=tolerance)]
        if samples is not None:
            checks.append(fmt.compare(net, runner, samples, name="validation",
                                      tolerance=tolerance))
    except fmt.errors as exc:
        raise ExportError(f"the {fmt.suffix} export failed: {exc}. Nothing was written; "
                          f"{fmt.without}.") from None
    for c in checks:
        say(fmt.suffix[1:], f"{c.n} {c.name} erasers ({c.size} px): max |{fmt.runtime} - "
            f"PyTorch| {c.max_diff:.1e} (tolerance {c.tolerance:.0e})")
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ExportError(f"the {fmt.suffix} model differs from PyTorch by "
                          f"{bad[0].max_diff:.2g} on {bad[0].name} erasers (tolerance "
                          f"{bad[0].tolerance:.0e}); nothing was written. {fmt.without[0].upper()}"
                          f"{fmt.without[1:]}, or report the model's architecture.")
    return path, checks

# ---------------------------------------------------------------------------------------------
# confirming the best trials with other seeds before one is shipped

@dataclass(frozen=True)
class Confirmed:
    """One of the top trials with its score and those of its configuration's re-runs."""

    trial: optuna.trial.FrozenTrial
    scores: tuple[float, ...]  # the trial's own first, then one per extra seed

    @property
    def mean(self) -> float:
        finite = [s for s in self.scores if math.isfinite(s)]
        return sum(finite) / len(finite) if finite else -math.inf


def confirm_top(study: optuna.Study, data: EraserSet, split: Split, *, top: int,
                seeds: int, device: str | torch.device = "cpu",
                on_run: Callable[[optuna.trial.FrozenTrial, int, float], None] | None = None,
                weights: WeightFinder | None = None) -> list[Confirmed]:
    """Re-train the configurations of the ``top`` best completed trials with ``seeds`` other
    seeds on the study's own split, and rank them by their mean validation score, best first.

    Single-seed scores on a validation split of a few hundred erasers are noisy (the same
    configuration varies by 0.1 graded AUC-PR between seeds; bench/RESULTS.md, "Proven
    starting points"), so the trial that ranks first by one run is not reliably the best
    configuration. The shipped weights stay the chosen trial's own."""
    candidates = [t for t in study.get_trials(deepcopy=False)
                  if exportable(t) and math.isfinite(t.value)]
    best = sorted(candidates, key=lambda t: t.value, reverse=True)[:top]
    space = study.user_attrs.get("space", {})
    out = []
    for trial in best:
        try:
            config = trial_config(trial, space)
        except ValueError as exc:
            raise StudyError(str(exc)) from None
        scores = [float(trial.value)]
        td = TrainData.from_split(data, split, config.model.input_size, device=device)
        for k in range(1, seeds + 1):
            seed = config.train.seed + 1000 * k  # far from the study's own seed
            run = replace(config, train=replace(config.train, seed=seed))
            try:
                scores.append(train(run, td, device=device, weights=weights).score)
            except WeightsError as exc:
                raise StudyError(str(exc)) from None
            if on_run is not None:
                on_run(trial, seed, scores[-1])
        out.append(Confirmed(trial, tuple(scores)))
    return sorted(out, key=lambda c: c.mean, reverse=True)
