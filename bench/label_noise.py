"""The impact of label noise, and of cleaning it: the table the report needs.

    python -m bench.label_noise [--levels 0 0.05 0.1 0.2] [--n 400] [--epochs 12] [--write]

For each noise level p, a synthetic set is made with ``data.synth.generate(..., noise=p)``: a
share p of the defective erasers is labelled good (missed defects), the true labels are kept
in ``truth/clean_labels.csv``. The same configuration is then trained on fold 0's training
part of a k-fold split (as delivered: noisy labels; best epoch chosen on the noisy validation
labels, like a real study) in three ways:

- ``none``: no cleaning;
- ``drop``: the erasers flagged by ``label_issues.py`` (confident learning on k-fold
  out-of-fold probabilities, made on the noisy labels only) get loss weight 0;
- ``down-weight``: they get ``--flagged-weight`` (default 0.3).

Every arm is scored on the *clean* labels of the same validation erasers: validation AUC-PR
(graded = mean one-vs-all over print error, physical error, no defect; and defect). The
finder's own precision and recall against the injected flips are reported as well. The
``none`` arm is the finder's fold-0 model itself (same split, same labels), so it is not
trained twice.

With ``--write`` the table replaces this script's section of ``bench/RESULTS.md`` (other
sections are left as they are). CPU-heavy: the defaults (400 erasers at 96 px, obvious
defects, a small CNN, 40 epochs, 3 folds) take about 20 minutes on two quiet cores, and the
finder recalls under half of the flips with that model. ``bench/gpu_label_noise.sh`` runs
the configurations in ``bench/label_noise_configs/`` at a real set's size on a GPU, where
the GRAY+NORMAL CNN at 160 px recalls 79-84 % of them at 5-10 % noise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: --help and --dry-run stay fast
    import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_self_confidence")
MISSED = "prune_by_noise_rate, --missed-only"
SECTION = "## Impact of label noise (`bench/label_noise.py`)"

DEFAULT_RUN = {
    # GRAY carries the print, NORMAL the relief: with these two a small CNN learns both
    # defect kinds on a CPU; with all six the colour channels drown the relief (see RESULTS).
    "model": {"input_size": 96, "channels": ["GRAY", "NORMAL"], "widths": [16, 32, 64],
              "kernel_sizes": [3, 3, 3], "convs_per_block": 1, "dense_width": 0,
              "dense_dropout": 0.0, "head_pool": "avg", "task": "multilabel"},
    # No loss weighting and no augmentation, constant lr: the variant that learned fastest in
    # short CPU runs, so that differences come from the labels, not from an unfinished model.
    "train": {"batch_size": 16, "lr": 3e-3, "schedule": "constant", "pos_weight_factor": 0.0,
              "early_stop_patience": 0},
    "augment": {"flips": False, "rotate_deg": 0.0, "translate": 0.0, "scale": 0.0,
                "shear_deg": 0.0, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0,
                "noise_std": 0.0, "blur_sigma": 0.0},
}


def build_parser() -> argparse.ArgumentParser:
    from cli.common import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m bench.label_noise", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2],
                   help="shares of defective erasers labelled good")
    p.add_argument("--n", type=int, default=400, help="erasers per synthetic set")
    p.add_argument("--source-size", type=int, default=96, help="side of the synthetic images")
    p.add_argument("--subtle-rate", type=float, default=0.0,
                   help="share of subtle defects (0: all obvious, learnable on a CPU)")
    p.add_argument("--seed", type=int, default=1, help="seed of the data, folds and training")
    p.add_argument("--synth-workers", type=int, default=2,
                   help="processes that make the synthetic sets (same bytes for any count)")
    p.add_argument("--config", default=None,
                   help="run configuration JSON (default: a small CNN, see DEFAULT_RUN)")
    p.add_argument("--epochs", type=int, default=40, help="epochs per training")
    p.add_argument("--folds", type=int, default=3,
                   help="folds of the label-issue finder; fold 0 is the evaluation split")
    p.add_argument("--filter-by", default="prune_by_noise_rate",
                   help="cleanlab's flagging rule (see search.label_issues)")
    p.add_argument("--missed-only", action=argparse.BooleanOptionalAction, default=True,
                   help="clean only erasers labelled good that look defective (the injected "
                   "noise; the rules table shows both)")
    p.add_argument("--flagged-weight", type=float, default=0.3,
                   help="loss weight of flagged erasers in the down-weight arm")
    p.add_argument("--workdir", default=None,
                   help="keep the synthetic sets and a JSON of the results here (default: a "
                   "temporary folder)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--write", action="store_true",
                   help="write the table into its section of --results")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the results file --write updates (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    return p


def clean_targets(truth_csv: Path, ids: list[str]):
    """(N, 2) targets from the synthetic truth, in ``ids`` order."""
    import csv

    import numpy as np

    with open(truth_csv, newline="") as f:
        label = {r["ID"]: r["label"] for r in csv.DictReader(f)}
    return np.array([[int(label[k][0]), int(label[k][2])] for k in ids], dtype=np.uint8)


def run_level(level: float, args: argparse.Namespace, config, folder: Path,
              device: str | torch.device = "cpu") -> dict:
    """One noise level: make the data, find issues, train the cleaning arms, score on truth."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from data import load_data, make_split
    from data.noise import find_issues, precision_recall, read_truth
    from data.pipeline import TrainData
    from data.synth import generate
    from model import evaluate
    from training.crossval import out_of_fold_probs
    from training.loop import train

    out = folder / f"noise_{level:g}"
    if not (out / "labels_multiclass.csv").exists():
        generate(out, n=args.n, seed=args.seed, size=args.source_size, noise=level,
                 subtle_rate=args.subtle_rate, workers=args.synth_workers, force=True)
    data = load_data(out, cache_dir=folder / "cache")
    truth = clean_targets(out / "truth" / "clean_labels.csv", data.ids)
    flipped = {k for k, f in read_truth(out / "truth" / "clean_labels.csv").items() if f}
    # which flips the finder can be expected to find: a model that learned print defects
    # flags missed print defects, one that did not learn physical ones cannot flag those
    is_print = dict(zip(data.ids, truth[:, 0].astype(bool), strict=True))
    kinds = {"print": {k for k in flipped if is_print[k]},
             "physical": {k for k in flipped if not is_print[k]}}

    t0 = time.perf_counter()
    cv = out_of_fold_probs(config, data, folds=args.folds, seed=args.seed, device=device)
    # beside the results, not in the set: runs of several configurations share the sets
    np.savez_compressed(folder / f"oof_probs_{level:g}.npz", probs=cv.probs, fold=cv.fold,
                        ids=np.array(data.ids))
    issues = find_issues(data.ids, data.targets, cv.probs, filter_by=args.filter_by,
                         missed_only=args.missed_only)
    flagged = issues.flagged_ids
    pr = precision_recall(flagged, flipped)
    found = {kind: [len(set(flagged) & ids), len(ids)] for kind, ids in kinds.items()}
    # The other flagging rules cost nothing more: the same probabilities, ranked again.
    rules = {rule: precision_recall(find_issues(data.ids, data.targets, cv.probs,
                                                filter_by=rule).flagged_ids, flipped)
             for rule in FILTERS}
    rules[MISSED] = precision_recall(find_issues(data.ids, data.targets, cv.probs,
                                                 filter_by=args.filter_by,
                                                 missed_only=True).flagged_ids, flipped)

    split = make_split(data.ids, data.codes, k=args.folds, seed=args.seed)
    val_ids, train_ids = split.val_ids(0), split.train_ids(0)
    row = {k: i for i, k in enumerate(data.ids)}
    val_rows = np.array([row[k] for k in val_ids])
    clean_val = truth[val_rows]

    def score(probs) -> dict:
        m = evaluate(probs, clean_val)
        return {"graded_ap": m["graded_ap"], "defect_ap": m["defect_ap"]}

    arms = {"none": score(cv.probs[val_rows])}  # fold 0's model: trained on noisy labels
    train_flipped = len(flipped & set(train_ids))
    train_flagged = len(set(flagged) & set(train_ids))
    images = data.images(config.model.input_size)
    for arm, weight in (("drop", 0.0), ("down-weight", args.flagged_weight)):
        if not train_flagged:  # nothing to clean: the run would repeat fold 0's exactly
            arms[arm] = arms["none"]
            continue
        run = replace(config, train=replace(config.train, flagged_weight=weight))
        td = TrainData(images, data.targets, data.ids, train_ids, val_ids, flagged=flagged)
        result = train(run, td, device=device)
        arms[arm] = score(result.val_probs)
    # How well the finder's models tell defective from good on the clean labels: confident
    # learning can only find missed defects that its model recognises as defects.
    oof_auroc = float(roc_auc_score(truth.max(axis=1), cv.probs[:, 3]))
    # per kind, on the clean labels (PROB_NAMES: print, physical, no defect, defect)
    kind_auroc = {kind: float(roc_auc_score(truth[:, i], cv.probs[:, i]))
                  for i, kind in enumerate(("print", "physical"))}
    return {"level": level, "erasers": len(data), "flipped": len(flipped),
            "train_flipped": train_flipped, "train_flagged": train_flagged,
            "finder": pr, "rules": rules, "arms": arms, "oof_defect_auroc": oof_auroc,
            "found_by_kind": found, "oof_kind_auroc": kind_auroc,
            "seconds": round(time.perf_counter() - t0, 1),
            "oof_fold_scores": cv.fold_scores}


def fingerprint(args: argparse.Namespace, config) -> str:
    """What a level's result depends on: reused from --workdir only when this matches."""
    import hashlib

    keys = ("n", "source_size", "subtle_rate", "seed", "folds", "filter_by", "missed_only",
            "flagged_weight")
    payload = json.dumps({"args": {k: getattr(args, k) for k in keys},
                          "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_done(path: Path, key: str) -> dict[float, dict]:
    """Levels already measured with these settings (``--workdir`` of an earlier run)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {r["level"]: r for r in results if r.get("key") == key}


def table(results: list[dict], args: argparse.Namespace) -> str:
    def f(v: float) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    def kinds(r: dict, key: str, fmt) -> str:
        v = r.get(key)  # absent from results measured before it was recorded
        return "n/a" if v is None else " / ".join(fmt(v[k]) for k in ("print", "physical"))

    lines = [
        "| injected noise | flipped (train) | finder's OOF AUROC: defect; print / physical | "
        "flagged (train) | finder precision | finder recall | found: missed print / "
        "physical-only defects | AUC-PR no cleaning | AUC-PR drop flagged | "
        f"AUC-PR down-weight {args.flagged_weight:g} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["arms"]
        cells = [f"{100 * r['level']:g} %", f"{r['flipped']} ({r['train_flipped']})",
                 f"{f(r['oof_defect_auroc'])}; {kinds(r, 'oof_kind_auroc', f)}",
                 f"{r['finder']['flagged']} ({r['train_flagged']})",
                 f(r["finder"]["precision"]), f(r["finder"]["recall"]),
                 kinds(r, "found_by_kind", lambda v: f"{v[0]} of {v[1]}")]
        cells += [f"{f(a[k]['graded_ap'])} / {f(a[k]['defect_ap'])}"
                  for k in ("none", "drop", "down-weight")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rules_table(results: list[dict]) -> str:
    """Flagged / precision / recall of every cleanlab rule at every level."""
    def f(v: float) -> str:
        return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.2f}"

    levels = [f"{100 * r['level']:g} %" for r in results]
    lines = ["| rule | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    for rule in (*FILTERS, MISSED):
        cells = [f"{r['rules'][rule]['flagged']} / {f(r['rules'][rule]['precision'])} / "
                 f"{f(r['rules'][rule]['recall'])}" for r in results]
        lines.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shown_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it, else its name alone (no
    machine paths in the results)."""
    p = Path(path).resolve()
    root = RESULTS.parent.parent
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name


def section(results: list[dict], args: argparse.Namespace, config, machine: str,
            minutes: float) -> str:
    from model import describe

    results = sorted(results, key=lambda r: r["level"])
    command = (f"python -m bench.label_noise --levels "
               f"{' '.join(f'{x:g}' for x in sorted(args.levels))} --n {args.n} "
               f"--source-size {args.source_size} --epochs {args.epochs} --folds {args.folds}")
    if args.config:
        command += f" --config {shown_path(args.config)}"
    return "\n".join([
        SECTION, "",
        f"`{command} --write` ({minutes:.0f} min on {machine}).", "",
        f"Synthetic sets of {args.n} erasers at {args.source_size} px (seed {args.seed}, "
        f"subtle-defect share {args.subtle_rate:g}); noise = share of defective erasers "
        "labelled good. Model: "
        f"{describe(config.model)}, {args.epochs} epochs, batch {config.train.batch_size}, "
        f"lr {config.train.lr:g}. Finder: {args.folds}-fold out-of-fold probabilities, "
        f"cleanlab `{args.filter_by}`{', missed defects only' if args.missed_only else ''} "
        f"(these ids are dropped or down-weighted). Evaluation: fold 0 "
        f"({results[0]['oof_fold_scores'][0]['n_val']} erasers) scored on the clean labels; "
        "cells are graded AUC-PR / defect AUC-PR.",
        "",
        table(results, args), "",
        "The finder's other flagging rules on the same out-of-fold probabilities (flagged / "
        "precision / recall, whole set):", "",
        rules_table(results), "",
        "Reading it: precision = share of flagged erasers that really were mislabelled, recall "
        "= share of the injected flips that were flagged (over the whole set). One seed, small "
        "validation split: differences of a few hundredths are within noise.", "",
    ])


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or append) this script's section of RESULTS.md, atomically."""
    from model.fileio import write_text

    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if nxt < 0 else old[nxt + 1:])
    write_text(path, new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    from cli.common import fail

    args = build_parser().parse_args(argv)
    if any(not 0 <= x < 1 for x in args.levels):
        return fail("--levels must lie in [0, 1).")
    if args.folds < 2 or args.epochs < 1 or args.n < 4 * args.folds:
        return fail("need --folds >= 2, --epochs >= 1 and at least 4 erasers per fold.")

    import torch

    from bench._common import machine, workdir
    from training.config import RunConfig, RunFileError, load_config
    from training.device import DeviceError, describe_device, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"epochs": args.epochs, "seed": args.seed}
    try:
        config = (load_config(args.config, **overrides) if args.config else
                  RunConfig.from_dict({**DEFAULT_RUN,
                                       "train": {**DEFAULT_RUN["train"], **overrides}}))
    except RunFileError as exc:
        return fail(f"--config: {exc}")
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        return fail(str(exc))
    runs = len(args.levels) * (args.folds + 2)
    print(f"plan: {len(args.levels)} noise levels x ({args.folds} finder folds + 2 cleaning "
          f"arms) = {runs} trainings of {args.epochs} epochs on {args.n} erasers, device "
          f"{describe_device(device)}")
    if args.dry_run:
        print("dry run: nothing trained.")
        return 0
    who = machine()
    results = []
    key = fingerprint(args, config)
    with workdir(args.workdir) as folder:
        done = load_done(folder / "label_noise.json", key)
        for level in args.levels:
            r = done.get(level) or {**run_level(level, args, config, folder, device), "key": key}
            results.append(r)
            a = r["arms"]
            print(f"noise {level:4.2f}: flagged {r['finder']['flagged']:3d}, precision "
                  f"{r['finder']['precision']:.2f}, recall {r['finder']['recall']:.2f}; graded "
                  f"AUC-PR none {a['none']['graded_ap']:.3f}, drop {a['drop']['graded_ap']:.3f},"
                  f" down-weight {a['down-weight']['graded_ap']:.3f} ({r['seconds']:.0f} s)",
                  flush=True)
            if args.workdir:  # a rerun with the same settings resumes after this level
                kept = [x for x in done.values() if x["level"] not in args.levels]
                (folder / "label_noise.json").write_text(json.dumps(kept + results, indent=1,
                                                                    default=float))
    # the levels' own compute time: levels resumed from --workdir count as first measured
    text = section(results, args, config, who, sum(r["seconds"] for r in results) / 60)
    print("\n" + text)
    if args.write:
        write_section(text, args.results)
        print(f"wrote its section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
