"""Export the best trial of a study (or --trial N) as <group>.pth, ready to hand in.

The weights come from the trial's stored best epoch (nothing is retrained, unless
--retrain-full refits the configuration on train+validation). The file is a plain dict that
loads with torch.load(path, weights_only=True); model.load(path) rebuilds the network with its
preprocessing. Before it is written, the export is checked to reproduce the trial's validation
score on the study's split; the same validation predictions measure whether test-time
augmentation helps and, with --min-recall, re-choose the thresholds. --onnx also writes
<group>.onnx (raw uint8 erasers in, the three graded probabilities out), checked against
PyTorch with onnxruntime. A model card <group>.md goes next to them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
import torch

import model as model_lib
from data import DataError, EraserSet, Split, format_problems
from data.cache import default_cache_dir
from data.cli import HelpFormatter, fail, progress_bar, setup_logging
from model import CheckpointError, OnnxCheck, OnnxExportError, ThresholdPolicy
from model.onnx import DEFAULT_TOLERANCE, random_images
from search.device import DeviceError, resolve_device
from search.export import (
    apply_policy,
    check_group,
    fetch_checkpoint,
    measure_tta,
    refit_checkpoint,
    retrain_full,
    select_trial,
    stamp,
    study_data,
    validation_targets,
    verify,
)
from search.model_card import model_card, write_model_card
from search.study import StudyError, artifact_dir_for, load_study, open_storage, storage_url
from search.train import NonFiniteLossError

ONNX_SAMPLES = 256  # validation erasers the ONNX file is checked on (raw, full size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--group", required=True, help="team name: the file is <group>.pth")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL; default: "
                   "$OPTUNA_STORAGE, else sqlite:///studies.db")
    p.add_argument("--artifact-dir", default=None,
                   help="folder of the study's artifacts (default: artifacts/ next to a SQLite "
                   "file, else ./artifacts)")
    p.add_argument("--out", default="exports", help="folder to write <group>.pth into")
    p.add_argument("--trial", type=int, default=None, help="export this trial, not the best")
    p.add_argument("--data", default=None,
                   help="the study's data, if it moved since the study ran (for verification)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-scoring the validation split (e.g. the data are elsewhere)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (shared with the other commands)")
    p.add_argument("--onnx", action="store_true",
                   help="also write <group>.onnx: raw uint8 (B, H, W, 6) in, class_probs (B, 3) "
                   "and defect_prob (B,) out, checked against PyTorch with onnxruntime")
    p.add_argument("--onnx-tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest accepted |onnxruntime - PyTorch| probability difference")
    p.add_argument("--min-recall", type=float, default=None, metavar="R",
                   help="re-choose the thresholds on validation for the best precision at "
                   "recall >= R (default: keep the trial's policy, max F1)")
    p.add_argument("--retrain-full", action="store_true",
                   help="refit the trial's configuration on train+validation for its best "
                   "epoch count (same seed); keeps the trial's validated thresholds")
    p.add_argument("--device", default="auto",
                   help="device for --retrain-full: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dry-run", action="store_true", help="show what would be exported")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = storage_url(args.storage)
    if args.min_recall is not None and not 0.0 < args.min_recall <= 1.0:
        return fail(f"--min-recall is a recall in (0, 1], not {args.min_recall}.")
    if args.onnx_tolerance <= 0:
        return fail(f"--onnx-tolerance must be positive, not {args.onnx_tolerance}.")
    if args.no_verify and (args.min_recall is not None or args.retrain_full):
        return fail("--min-recall and --retrain-full need the study's data and validation "
                    "predictions, which --no-verify skips; drop --no-verify (pass --data if "
                    "the data moved).")
    try:
        group = check_group(args.group)
        study = load_study(args.study, open_storage(url))
        trial = select_trial(study, args.trial)
        artifact_dir = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url)
        ckpt = stamp(fetch_checkpoint(trial, artifact_dir), group=group, study=study,
                     trial=trial)
    except (StudyError, CheckpointError) as exc:
        return fail(str(exc))
    metric = study.user_attrs.get("space", {}).get("metric", "graded_ap")
    out = Path(args.out) / f"{group}.pth"
    print(f"study   {args.study}, trial {trial.number} ({metric} {trial.value:.4f}, "
          f"{trial.user_attrs.get('architecture', '')})")
    names = [out.name, f"{group}.onnx", f"{group}.md"] if args.onnx else [out.name, f"{group}.md"]
    if args.dry_run:
        refit = (f" after refitting on train+validation for {trial.user_attrs.get('best_epoch')}"
                 " epochs" if args.retrain_full else "")
        print(f"dry run: would write {', '.join(names)} into {out.parent}{refit}")
        return 0
    try:
        device = resolve_device(args.device) if args.retrain_full else "cpu"
    except DeviceError as exc:
        return fail(str(exc))

    with tempfile.TemporaryDirectory(dir=_parent(out)) as tmp:
        staged = Path(tmp) / out.name
        try:
            net = _stage(ckpt, staged)
        except CheckpointError as exc:
            return fail(f"the exported file does not load back: {exc}")
        samples = None
        if not args.no_verify:
            try:
                data, split = study_data(study, args.data, cache_dir=args.cache_dir)
                check, probs = verify(net, trial, data, split, metric)
            except DataError as exc:
                return fail(f"the study's data cannot be loaded to verify the export:\n"
                            f"{format_problems(exc.problems)}\nPass --data, or --no-verify.")
            except StudyError as exc:
                return fail(f"{exc} Or skip the check with --no-verify.")
            print(f"verify  {metric} on {check.n_val} validation erasers: {check.measured:.4f} "
                  f"(trial recorded {check.stored:.4f}, difference {check.diff:.4f})")
            if not check.ok:
                return fail(f"the exported model scores {check.measured:.4f}, not the trial's "
                            f"{check.stored:.4f}; nothing was written. Was the study trained "
                            "on other data?")
            val_ids = split.val_ids()
            targets = validation_targets(data, val_ids)
            if args.min_recall is not None:
                ckpt = apply_policy(ckpt, probs, targets,
                                    ThresholdPolicy("min_recall", args.min_recall))
                net.thresholds = dict(ckpt["thresholds"])
            ckpt["tta"] = measure_tta(net, data, val_ids, probs, targets,
                                      ThresholdPolicy.from_dict(ckpt["threshold_policy"]))
            print_tta(ckpt["tta"])
            if args.retrain_full:
                try:
                    ckpt = _refit(trial, study.user_attrs.get("space", {}), ckpt, data,
                                  split, device)
                except (StudyError, NonFiniteLossError) as exc:
                    return fail(f"the refit on train+validation failed: {exc} Nothing was "
                                "written.")
            if args.onnx:
                samples = data.images(None, val_ids[:ONNX_SAMPLES]).transpose(0, 2, 3, 1)
            try:
                net = _stage(ckpt, staged)  # again, with what was added since
            except CheckpointError as exc:
                return fail(f"the exported file does not load back: {exc}")
        staged_files = [staged]
        checks: list[OnnxCheck] = []
        if args.onnx:
            try:
                onnx_path = model_lib.export_onnx(net, Path(tmp) / f"{group}.onnx")
                checks = _check_onnx(net, onnx_path, samples, int(ckpt.get("source_size", 310)),
                                     args.onnx_tolerance)
            except OnnxExportError as exc:
                return fail(f"the ONNX export failed: {exc}. Nothing was written; export "
                            "without --onnx to get the .pth alone.")
            for c in checks:
                print(f"onnx    {c.n} {c.name} erasers ({c.size} px): max |onnxruntime - "
                      f"PyTorch| {c.max_diff:.1e} (tolerance {c.tolerance:.0e})")
            bad = [c for c in checks if not c.ok]
            if bad:
                return fail(f"the ONNX model differs from PyTorch by {bad[0].max_diff:.2g} on "
                            f"{bad[0].name} erasers (tolerance {bad[0].tolerance:.0e}); nothing "
                            "was written. Export without --onnx, or report the model's "
                            "architecture.")
            staged_files.append(onnx_path)
        card = model_card(ckpt, staged, onnx=staged_files[1] if args.onnx else None,
                          onnx_checks=checks)
        staged_files.append(write_model_card(Path(tmp) / f"{group}.md", card))
        out.parent.mkdir(parents=True, exist_ok=True)
        for path in staged_files[::-1]:  # the .pth last: it is the one that counts
            os.replace(path, out.parent / path.name)
    print_contents(out, net, [out.parent / p.name for p in staged_files[1:]])
    stale = out.with_suffix(".onnx")
    if not args.onnx and stale.exists():
        print(f"note    {stale} is from an earlier export and does not match this model; "
              "delete it or export again with --onnx", file=sys.stderr)
    return 0


def _stage(ckpt: dict, path: Path) -> model_lib.InspectionModel:
    """Save ``ckpt`` to ``path`` and load it back the way a user would (weights_only=True)."""
    return model_lib.load(model_lib.save_checkpoint(ckpt, path))


def _refit(trial: optuna.trial.FrozenTrial, space: dict, ckpt: dict, data: EraserSet,
           split: Split, device: str | torch.device) -> dict:
    n = len(split.train_ids()) + len(split.val_ids())
    print(f"refit   trial {trial.number}'s configuration on train+validation ({n} erasers, "
          f"{trial.user_attrs.get('best_epoch')} epochs, seed kept)")
    update, close = progress_bar("refit", unit="epoch")
    try:
        result = retrain_full(trial, space, data, split, device=device,
                              callback=lambda r: update(r.epoch, r.epochs))
    finally:
        close()
    print(f"refit   done in {result.seconds:.0f} s; thresholds and validation metrics are the "
          "trial's (no validation set is left to choose them on)")
    return refit_checkpoint(result, ckpt, n)


def _check_onnx(net: model_lib.InspectionModel, path: Path, samples: np.ndarray | None,
                source_size: int, tolerance: float) -> list[OnnxCheck]:
    session = model_lib.onnx_session(path)
    checks = [model_lib.compare_onnx(net, session, random_images(4, source_size, seed=1),
                                     name="random", tolerance=tolerance)]
    if samples is not None:
        checks.append(model_lib.compare_onnx(net, session, samples, name="validation",
                                             tolerance=tolerance))
    return checks


def print_tta(tta: dict) -> None:
    verdict = ("recommended: predict.py --tta" if tta["recommended"]
               else "not worth 8x the inference cost")
    print(f"tta     8 flips/rotations on {tta['n_val']} validation erasers: graded AP "
          f"{tta['graded_ap']:.4f} -> {tta['graded_ap_tta']:.4f}, defect AP "
          f"{tta['defect_ap']:.4f} -> {tta['defect_ap_tta']:.4f} ({verdict})")


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def print_contents(path: Path, net: model_lib.InspectionModel, also: list[Path]) -> None:
    meta, cfg = net.meta, net.cfg
    val = meta.get("val_metrics", {})
    print(f"wrote   {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"holds   {model_lib.describe(cfg)}")
    print(f"        channels {', '.join(cfg.channels)}; input {cfg.input_size} px from "
          f"{meta.get('source_size')} px; thresholds "
          + ", ".join(f"{k} {v:.3f}" for k, v in net.thresholds.items()))
    print("        validation: " + ", ".join(
        f"{k} {val[k]:.4f}" for k in ("graded_ap", "graded_f1", "defect_ap", "defect_f1")
        if k in val))
    policy = meta.get("threshold_policy") or {}
    if "defect_precision" in val:
        rule = ("max F1" if policy.get("kind", "max_f1") == "max_f1"
                else f"min recall {policy.get('min_recall')}")
        print(f"        operating point ({rule}): defect precision "
              f"{val['defect_precision']:.3f}, recall {val['defect_recall']:.3f}"
              + (" (the trial's, before the refit)" if "retrained" in meta else ""))
    for extra in also:
        what = "model card" if extra.suffix == ".md" else "ONNX: raw uint8 (B, H, W, 6) in"
        print(f"wrote   {extra} ({what})")
    print(f"load    import model; m = model.load({str(path)!r})")


if __name__ == "__main__":
    sys.exit(main())
