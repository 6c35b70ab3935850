"""Turn a trial's stored best-epoch weights into the team's ``<group>.pth``.

Nothing is retrained: every finished trial kept its checkpoint as an Optuna artifact. Export
downloads it, stamps it with the group and study, checks that it loads under
``weights_only=True`` and still scores the trial's validation metric on the study's own
split, and only then moves it into place. :func:`export_trial` is the whole export as
``export_best.py`` runs it (thresholds, test-time augmentation, refit, ONNX, model card).
"""

from __future__ import annotations

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
from model.fileio import write_text
from model.onnx import DEFAULT_TOLERANCE, random_images
from model.pretrained import WeightFinder, WeightsError
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

ONNX_SAMPLES = 256  # validation erasers the ONNX file is checked on (raw, full size)
Say = Callable[[str, str], None]  # (tag, message): a line of progress for the user
CardWriter = Callable[[dict, Path, Path | None, list[model_lib.OnnxCheck]], str]


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
    onnx_tolerance: float = DEFAULT_TOLERANCE
    weights: WeightFinder | None = None  # a pretrained backbone's ImageNet weights (refit)


@dataclass
class Exported:
    """The files written (the ``.pth`` first) and the model as a user loads it back."""

    paths: list[Path]
    net: model_lib.InspectionModel
    onnx_checks: list[model_lib.OnnxCheck]


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, opts: ExportOptions, *,
                 card: CardWriter, say: Say = lambda tag, message: None,
                 on_refit_epoch: Callable[[EpochReport], None] | None = None) -> Exported:
    """Export ``trial`` to ``<group>.pth`` (and ``.onnx``) plus its model card in
    ``opts.out_dir``: everything is staged in a temporary folder there and moved into place
    only once every check passed (the ``.pth`` last). Raises :class:`ExportError`."""
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
                    f"{test.get('graded_f1', math.nan):.4f} at the shipped thresholds")
        files = [staged]
        checks: list[model_lib.OnnxCheck] = []
        if opts.onnx:
            onnx_path, checks = _onnx(net, Path(tmp) / f"{opts.group}.onnx", samples,
                                      int(ckpt.get("source_size", 310)), opts.onnx_tolerance,
                                      say)
            files.append(onnx_path)
        text = card(ckpt, staged, files[1] if opts.onnx else None, checks)
        files.append(write_text(Path(tmp) / f"{opts.group}.md", text))
        for path in files[::-1]:  # the .pth last: it is the one that counts
            os.replace(path, opts.out_dir / path.name)
    return Exported(paths=[opts.out_dir / p.name for p in files], net=net, onnx_checks=checks)


def _stage(ckpt: dict, path: Path) -> model_lib.InspectionModel:
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
    those predictions: thresholds, TTA, refit, ONNX samples."""
    try:
        data, split = study_data(study, opts.data_path, cache_dir=opts.cache_dir)
        check, probs = verify(net, trial, data, split, metric)
    except DataError as exc:
        raise ExportError(f"the study's data cannot be loaded to verify the export:\n"
                          f"{format_problems(exc.problems)}\nPass --data, or --no-verify."
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
    if opts.min_recall is not None:
        ckpt = apply_policy(ckpt, probs, targets,
                            model_lib.ThresholdPolicy("min_recall", opts.min_recall))
        net.thresholds = dict(ckpt["thresholds"])
    ckpt["tta"] = measure_tta(net, data, val_ids, probs, targets,
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
               if opts.onnx else None)
    return ckpt, samples, data, split


def _onnx(net: model_lib.InspectionModel, path: Path, samples: np.ndarray | None,
          source_size: int, tolerance: float, say: Say
          ) -> tuple[Path, list[model_lib.OnnxCheck]]:
    """Export ``net`` to ONNX and check it against PyTorch on random and validation erasers."""
    try:
        path = model_lib.export_onnx(net, path)
        session = model_lib.onnx_session(path)
        checks = [model_lib.compare_onnx(net, session, random_images(4, source_size, seed=1),
                                         name="random", tolerance=tolerance)]
        if samples is not None:
            checks.append(model_lib.compare_onnx(net, session, samples, name="validation",
                                                 tolerance=tolerance))
    except model_lib.OnnxExportError as exc:
        raise ExportError(f"the ONNX export failed: {exc}. Nothing was written; export "
                          "without --onnx to get the .pth alone.") from None
    for c in checks:
        say("onnx", f"{c.n} {c.name} erasers ({c.size} px): max |onnxruntime - PyTorch| "
            f"{c.max_diff:.1e} (tolerance {c.tolerance:.0e})")
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ExportError(f"the ONNX model differs from PyTorch by {bad[0].max_diff:.2g} on "
                          f"{bad[0].name} erasers (tolerance {bad[0].tolerance:.0e}); nothing "
                          "was written. Export without --onnx, or report the model's "
                          "architecture.")
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
