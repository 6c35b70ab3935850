"""Export the best trial of a study (or --trial N) as <group>.pth, ready to hand in.

The weights come from the trial's stored best epoch (nothing is retrained, unless
--retrain-full refits the configuration on train+validation). The file is a plain dict that
loads with torch.load(path, weights_only=True); model.load(path) rebuilds the network with its
preprocessing. Before it is written, the export is checked to reproduce the trial's validation
score on the study's split; the same validation predictions choose an ensemble of the best
trials when it beats the single best by more than the noise of the split (--ensemble), measure
whether test-time augmentation helps and, with --min-recall, re-choose the thresholds.
<group>.pt2 (a torch.export program: raw uint8 erasers in, the three graded probabilities out;
it runs with PyTorch alone) and, with --onnx, <group>.onnx are checked against the .pth. A
model card <group>.md goes next to them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

import model as model_lib
from cli.checks import (
    POSITIVE,
    RECALL,
    at_least,
    bad_number,
    existing_outputs,
    folder_problem,
    pool_size,
)
from cli.common import HelpFormatter, add_study_location, fail, progress_bar, setup_logging
from data import DataError
from data.cache import default_cache_dir
from model.ensemble import EnsembleModel, parts, summary
from model.onnx import DEFAULT_TOLERANCE
from model.pretrained import WEIGHTS_ENV, WeightFinder, WeightsError
from reporting.model_card import model_card
from search.ensemble import DEFAULT_POOL
from search.export import (
    ExportError,
    ExportOptions,
    Standalone,
    check_group,
    confirm_top,
    export_trial,
    select_trial,
    study_data,
)
from search.study import (
    StudyError,
    artifact_dir_for,
    load_study,
    open_existing_storage,
    storage_url,
)
from training.device import DeviceError, resolve_device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--group", required=True, help="team name: the file is <group>.pth")
    add_study_location(p)
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
    p.add_argument("--no-pt2", dest="pt2", action="store_false",
                   help="do not write <group>.pt2 (by default it is written: a torch.export "
                   "program of the same contract as the ONNX graph, run with PyTorch alone)")
    p.add_argument("--onnx-tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest accepted |onnxruntime or .pt2 - PyTorch| probability "
                   "difference")
    p.add_argument("--ensemble", default=str(DEFAULT_POOL), metavar="K|off",
                   help="choose an ensemble from the K best trials (greedy selection on "
                   "validation) and ship it when it beats the single best by more than the "
                   "noise of the validation split; off: always the single best")
    p.add_argument("--min-recall", type=float, default=None, metavar="R",
                   help="re-choose the thresholds on validation for the best precision at "
                   "recall >= R (default: keep the trial's policy, max F1)")
    p.add_argument("--retrain-full", action="store_true",
                   help="refit the trial's configuration on train+validation for its best "
                   "epoch count (same seed); keeps the trial's validated thresholds")
    p.add_argument("--device", default="auto",
                   help="device for --retrain-full: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--weights", metavar="PATH", help="ImageNet weights of a pretrained backbone "
                   "for --retrain-full and --confirm: a file named after it, or a folder "
                   f"(default: ${WEIGHTS_ENV}, then timm's download cache)")
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="re-train the K best trials' configurations with other seeds on the "
                   "study's split and export the one with the best mean validation score "
                   "(its own weights); 0 (the default): no confirmation, the best single trial "
                   "is exported")
    p.add_argument("--confirm-seeds", type=int, default=2, metavar="S",
                   help="extra seeds per configuration for --confirm")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export of the same --group in --out")
    p.add_argument("--dry-run", action="store_true", help="show what would be exported")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = storage_url(args.storage)
    pool = pool_size(args.ensemble)
    if pool is None:
        return fail(f"--ensemble {args.ensemble!r} must be a whole number of trials (2 or more "
                    "to allow an ensemble) or 'off'.")
    problem = (bad_number([("--min-recall", args.min_recall, RECALL),
                           ("--onnx-tolerance", args.onnx_tolerance, POSITIVE),
                           ("--trial", args.trial, at_least(0)),
                           ("--confirm", args.confirm, at_least(0)),
                           ("--confirm-seeds", args.confirm_seeds, at_least(1))])
               or folder_problem(args.out, "--out")
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    if args.no_verify and (args.min_recall is not None or args.retrain_full or args.confirm):
        return fail("--min-recall, --retrain-full and --confirm need the study's data and "
                    "validation predictions, which --no-verify skips; drop --no-verify (pass "
                    "--data if the data moved).")
    if args.confirm and args.trial is not None:
        return fail("--confirm chooses the trial itself; drop --trial or --confirm.")
    if args.trial is not None or args.retrain_full or args.confirm or args.no_verify:
        pool = 0  # each asks for one trial's model (or has no validation to choose on)
    try:
        group = check_group(args.group)
        study = load_study(args.study, open_existing_storage(url))
        trial = select_trial(study, args.trial)
        device = resolve_device(args.device) if args.retrain_full or args.confirm else "cpu"
        weights = WeightFinder(args.weights)
    except (StudyError, DeviceError, WeightsError) as exc:
        return fail(str(exc))
    metric = study.user_attrs.get("space", {}).get("metric", "graded_ap")
    out = Path(args.out) / f"{group}.pth"
    suffixes = [".md", *([".pt2"] if args.pt2 else []), *([".onnx"] if args.onnx else [])]
    earlier = None if args.force else existing_outputs(
        [out, *(out.with_suffix(s) for s in suffixes)], "--out")
    if earlier:
        return fail(earlier)
    print(f"study   {args.study}, trial {trial.number} ({metric} {trial.value:.4f}, "
          f"{trial.user_attrs.get('architecture', '')})")
    if args.confirm and not args.dry_run:
        try:
            trial = confirm(study, args, device, weights)
        except (StudyError, DataError) as exc:
            return fail(f"--confirm: {exc}")
    if args.dry_run:
        names = [out.name, *(f"{group}{s}" for s in suffixes)]
        refit = (f" after refitting on train+validation for {trial.user_attrs.get('best_epoch')}"
                 " epochs" if args.retrain_full else "")
        ensemble = (f"; an ensemble of the {pool} best trials if it beats trial {trial.number} "
                    "on validation" if pool > 1 else "")
        print(f"dry run: would write {', '.join(names)} into {out.parent}{refit}{ensemble}")
        return 0
    opts = ExportOptions(
        group=group, out_dir=out.parent,
        artifact_dir=Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url),
        data_path=args.data, cache_dir=args.cache_dir, verify=not args.no_verify,
        min_recall=args.min_recall, retrain_full=args.retrain_full, device=device,
        onnx=args.onnx, pt2=args.pt2, onnx_tolerance=args.onnx_tolerance, weights=weights,
        ensemble=pool)
    update, close = progress_bar("refit", unit="epoch")
    try:
        exported = export_trial(study, trial, opts, card=card, say=say,
                                on_refit_epoch=lambda r: update(r.epoch, r.epochs))
    except ExportError as exc:
        return fail(str(exc))
    finally:
        close()
    print_contents(exported.paths[0], exported.net, exported.paths[1:])
    for suffix, wanted, flag in ((".onnx", args.onnx, "with --onnx"),
                                 (".pt2", args.pt2, "without --no-pt2")):
        stale = out.with_suffix(suffix)
        if not wanted and stale.exists():
            print(f"note    {stale} is from an earlier export and does not match this model; "
                  f"delete it or export again {flag}", file=sys.stderr)
    return 0



def confirm(study, args: argparse.Namespace, device,
            weights: WeightFinder) -> optuna.trial.FrozenTrial:
    """--confirm: the trial whose configuration scores best over several seeds."""
    data, split = study_data(study, args.data, cache_dir=args.cache_dir)
    print(f"confirm the {args.confirm} best trials with {args.confirm_seeds} more seed(s) "
          "each on the study's split ...", flush=True)
    ranked = confirm_top(study, data, split, top=args.confirm, seeds=args.confirm_seeds,
                         device=device, weights=weights, on_run=lambda t, seed, score: say(
                             "confirm", f"trial {t.number}, seed {seed}: {score:.4f}"))
    for c in ranked:
        say("confirm", f"trial {c.trial.number}: mean {c.mean:.4f} over "
            f"{', '.join(f'{s:.4f}' for s in c.scores)}")
    chosen = ranked[0].trial
    say("confirm", f"exporting trial {chosen.number} (best mean; its own weights)")
    return chosen


def say(tag: str, message: str) -> None:
    print(f"{tag:<7s} {message}")


def card(ckpt: dict, pth: Path, standalone: list[Standalone]) -> str:
    return model_card(ckpt, pth, standalone=standalone)


def print_contents(path: Path, net: model_lib.InspectionModel | EnsembleModel,
                   also: list[Path]) -> None:
    meta = net.meta
    val = meta.get("val_metrics", {})
    print(f"wrote   {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"holds   {summary(net)}")
    inputs = "; ".join(f"channels {', '.join(m.cfg.channels)}, input {m.cfg.input_size} px"
                       for m, _ in parts(net))
    print(f"        {inputs} from {meta.get('source_size')} px; thresholds "
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
    what = {".md": "model card", ".onnx": "ONNX: raw uint8 (B, H, W, 6) in",
            ".pt2": "torch.export: runs with PyTorch alone, raw uint8 (B, H, W, 6) in"}
    for extra in also:
        print(f"wrote   {extra} ({what.get(extra.suffix, extra.suffix)})")
    print(f"load    import model; m = model.load({str(path)!r})")


if __name__ == "__main__":
    sys.exit(main())
