"""Score erasers with an exported model: one CSV row per eraser, metrics when labels exist.

Columns: id, prob_defect, pred_defect, prob_print, prob_physical, then pred_print,
pred_physical, prob_no_defect, pred_no_defect. Decisions use the thresholds stored in the
model (chosen on validation). With labels (--labels, or CSVs next to the images) it prints
AUC-PR and F1 for defect and one-vs-all for print error, physical error and no defect.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

import model as model_lib
from cli.checks import at_least, bad_number, file_problem, folder_problem
from cli.common import EXIT_USAGE, HelpFormatter, fail, setup_logging
from cli.loading import load_or_fail
from data.cache import default_cache_dir
from model import PROB_NAMES, CheckpointError
from model.ensemble import summary
from model.fileio import atomic_write
from training.device import DeviceError, resolve_device
from training.scoring import graded_table, predict_set, score

COLUMNS = ("id", "prob_defect", "pred_defect", "prob_print", "prob_physical", "pred_print",
           "pred_physical", "prob_no_defect", "pred_no_defect")
# CSV column stem -> model.PROB_NAMES entry
STEMS = {"defect": "defect", "print": "print_error", "physical": "physical_error",
         "no_defect": "no_defect"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("model", help="exported model (.pth)")
    p.add_argument("data", help="folder of .npy/PNG files, arrays.zip or images.zip")
    p.add_argument("--labels", nargs="+", metavar="CSV",
                   help="label CSV(s) to score against; default: CSVs next to the images")
    p.add_argument("--out", default=None,
                   help="CSV to write (default: reports/predictions/<model>_<data>.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=128, help="erasers per forward pass")
    p.add_argument("--tta", action="store_true",
                   help="average over the 8 flips/90-degree rotations of each eraser")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (shared with the other commands)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--dry-run", action="store_true",
                   help="load the model and the data, predict nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def write_predictions(path: Path, ids: list[str], probs: np.ndarray,
                      thresholds: dict[str, float]) -> Path:
    """Write the per-eraser CSV atomically (never a half-written file)."""
    col = {name: i for i, name in enumerate(PROB_NAMES)}
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, eraser_id in enumerate(ids):
            row: dict[str, object] = {"id": eraser_id}
            for stem, name in STEMS.items():
                p = float(probs[i, col[name]])
                row[f"prob_{stem}"] = f"{p:.6f}"
                row[f"pred_{stem}"] = int(p >= thresholds[name])
            w.writerow([row[c] for c in COLUMNS])
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = Path(args.out) if args.out else (
        Path("reports") / "predictions"
        / f"{Path(args.model).stem}_{Path(args.data).resolve().name}.csv")
    problem = (bad_number([("--batch-size", args.batch_size, at_least(1))])
               or file_problem(out, "--out", force=args.force)
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    try:
        device = resolve_device(args.device)
        net = model_lib.load(args.model, device=device)
    except (CheckpointError, DeviceError) as exc:
        return fail(str(exc))
    data = load_or_fail(args.data, args.labels, cache_dir=args.cache_dir, hint=False,
                        require_labels=bool(args.labels))
    if data is None:
        return EXIT_USAGE
    meta = net.meta
    print(f"model   {args.model}: {summary(net)}"
          + (f", study {meta['study']} trial {meta['trial']}" if "study" in meta else ""))
    print(f"data    {len(data)} erasers from {data.source}"
          + (f", labels {', '.join(data.label_files)}" if data.label_files else ", no labels"))
    source_size = meta.get("source_size")
    if source_size and source_size != data.image_size:
        print(f"warning the model was trained on {source_size} px erasers, these are "
              f"{data.image_size} px", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing predicted.")
        return 0

    probs = predict_set(net, data, batch_size=args.batch_size, tta=args.tta)
    tta = meta.get("tta") or {}
    if args.tta and "thresholds" in tta:
        # Averaged probabilities are smoother; export chose thresholds for them on validation.
        net.thresholds = dict(tta["thresholds"])
    write_predictions(out, data.ids, probs, net.thresholds)
    print(f"wrote   {out} ({len(data)} rows{', TTA x8' if args.tta else ''})")

    val = meta.get("val_metrics", {})
    if args.tta and "defect_precision_tta" in tta:
        val = {"defect_precision": tta["defect_precision_tta"],
               "defect_recall": tta["defect_recall_tta"]}
    if "defect_precision" in val:
        policy = meta.get("threshold_policy") or {}
        rule = ("max F1" if policy.get("kind", "max_f1") == "max_f1"
                else f"best precision at recall >= {policy.get('min_recall')}")
        print(f"operating point (from validation{', TTA' if args.tta else ''}; {rule}): defect "
              f"threshold {net.thresholds['defect']:.3f} -> precision "
              f"{val['defect_precision']:.3f}, recall {val['defect_recall']:.3f}"
              + (" (measured on the trial's model before the refit on train+validation)"
                 if "retrained" in meta else ""))
    if tta and not args.tta and tta.get("recommended"):
        print(f"note    TTA raised the validation graded AP from {tta['graded_ap']:.4f} to "
              f"{tta['graded_ap_tta']:.4f}; try --tta")
    if data.targets is not None:
        print_scores(score(net, probs, data.targets), val=meta.get("val_metrics", {}),
                     test=meta.get("test_metrics") or {})
    return 0


def print_scores(metrics: dict, *, val: dict, test: dict) -> None:
    """These erasers' AUC-PR and F1 per class, next to the model's validation and test ones."""
    nan = float("nan")
    stored = [("validation", val)] + ([("test", test)] if test else [])
    head = "".join(f" {what + ' AUC-PR/F1':>22s}" for what, _ in stored)
    print(f"\n{'class':16s} {'AUC-PR':>7s} {'F1':>7s}{head}   (thresholds from the model)")
    for name, ap, f1 in graded_table(metrics):
        others = "".join(f" {d.get(f'{name}_ap', nan):14.4f}/{d.get(f'{name}_f1', nan):.4f}"
                         for _, d in stored)
        print(f"{name:16s} {ap:7.4f} {f1:7.4f}{others}")
    others = "".join(f" {d.get('graded_ap', nan):14.4f}/{d.get('graded_f1', nan):.4f}"
                     for _, d in stored)
    print(f"{'mean (graded)':16s} {metrics['graded_ap']:7.4f} {metrics['graded_f1']:7.4f}{others}")


if __name__ == "__main__":
    sys.exit(main())
