"""``python -m search.label_issues DATA_PATH (--study NAME | --config run.json)``: find labels
the automated annotator probably got wrong.

Trains the chosen configuration (a study's best trial, or a run file from ``train.py
--print-config``) with k-fold cross-validation, so that every eraser gets probabilities from a
model that never saw its label; ranks suspected mislabels with confident learning
(``data.noise``: cleanlab's ``find_label_issues``); and writes into ``--out``:

- ``label_issues.csv``: the flagged erasers, most suspicious first (id, given label, suggested
  label, confidence of the suggestion, quality = probability of the given label);
- ``label_quality.csv``: every eraser with its fold, out-of-fold class probabilities and quality;
- ``top_suspects.png``: the most suspicious erasers, all six channels;
- ``summary.md`` / ``summary.json``: counts, settings, per-fold scores, and precision/recall
  when the truth of a synthetic set is found (``truth/clean_labels.csv``);
- with ``--write-cleaned``: ``labels_cleaned.csv``, a copy of the labels with the flagged
  erasers relabelled (or dropped), for ``--labels`` of the next study.

Feed the list to a search with ``run_study.py --flagged reports/label_issues/label_issues.csv``:
it then tunes how much the flagged erasers count (0 = dropped).

The command lives in ``search/`` rather than ``data/`` because it trains models; the ranking
itself (pure numpy + cleanlab) is ``data.noise``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data import EraserSet, make_split
from data.analyze import markdown_table, staged_output, write_csv
from data.cache import default_cache_dir
from data.labels import MULTICLASS, read_label_csv
from data.noise import (
    CLEAN_ACTIONS,
    LabelIssues,
    NoiseError,
    class_names,
    find_issues,
    joint_probs,
    precision_recall,
    read_truth,
    write_cleaned,
    write_issues,
)
from model import PROB_NAMES, describe, evaluate
from search.space import trial_config
from search.train import EpochReport, RunConfig, TrainData, load_config, train

log = logging.getLogger(__name__)

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
TRUTH_CSV = Path("truth") / "clean_labels.csv"


@dataclass
class CrossVal:
    """Out-of-fold probabilities for every eraser and how each fold's model scored."""

    probs: np.ndarray  # (N, 4) in model.PROB_NAMES order, data.ids order
    fold: np.ndarray  # fold each eraser was held out in
    fold_scores: list[dict]
    seconds: float


def out_of_fold_probs(config: RunConfig, data: EraserSet, *, folds: int = 5, seed: int = 0,
                      device: str | torch.device = "cpu", flagged: tuple[str, ...] = (),
                      on_epoch: Callable[[int, EpochReport], None] | None = None) -> CrossVal:
    """Train ``config`` on ``folds - 1`` folds at a time; predict the held-out fold.

    The folds are stratified on ``X_Y`` (``data.make_split``). Each fold's probabilities come
    from its best epoch, chosen on that fold's (noisy) labels like any trial's. ``on_epoch``
    gets ``(fold, EpochReport)``.
    """
    split = make_split(data.ids, data.codes, k=folds, seed=seed)
    images = torch.as_tensor(data.images(config.model.input_size))
    row = {k: i for i, k in enumerate(data.ids)}
    probs = np.full((len(data.ids), len(PROB_NAMES)), np.nan, dtype=np.float64)
    fold_of = np.full(len(data.ids), -1, dtype=np.int64)
    scores, seconds = [], 0.0
    for f in range(folds):
        td = TrainData(images, data.targets, data.ids, train_ids=split.train_ids(f),
                       val_ids=split.val_ids(f), flagged=flagged)
        callback = None if on_epoch is None else (lambda r, f=f: on_epoch(f, r))
        result = train(config, td, device=device, callback=callback)
        rows = np.array([row[k] for k in result.val_ids], dtype=np.int64)
        probs[rows] = result.val_probs
        fold_of[rows] = f
        seconds += result.seconds
        scores.append({"fold": f, "n_val": len(rows), "best_epoch": result.best_epoch,
                       "epochs_run": result.epochs_run,
                       **{k: result.metrics.get(k, math.nan)
                          for k in ("graded_ap", "defect_ap", "graded_f1")}})
        log.info("fold %d/%d: %s %.4f", f + 1, folds, config.train.metric, result.score)
    return CrossVal(probs=probs, fold=fold_of, fold_scores=scores, seconds=seconds)


def quality_rows(issues: LabelIssues, cv: CrossVal) -> list[dict]:
    """Every eraser: fold, given and suggested label, quality, flag, class probabilities."""
    names = class_names(issues.label_kind)
    joint = joint_probs(cv.probs, issues.label_kind)
    rank = {int(i): r + 1 for r, i in enumerate(issues.order)}
    return [{"id": k, "fold": int(cv.fold[i]), "given_label": names[issues.given[i]],
             "suggested_label": names[issues.suggested[i]],
             "quality": round(float(issues.quality[i]), 4), "flagged": int(issues.flagged[i]),
             "rank": rank.get(i, ""),
             **{f"p_{c}": round(float(joint[i, j]), 4) for j, c in enumerate(names)}}
            for i, k in enumerate(issues.ids)]


def truth_file(data_path: Path) -> Path | None:
    """A synthetic set's ``truth/clean_labels.csv`` next to the data, if there is one."""
    folder = data_path if data_path.is_dir() else data_path.parent
    path = folder / TRUTH_CSV
    return path if path.is_file() else None


def cleaned_header(data: EraserSet) -> tuple[str, ...] | None:
    """The header of the delivered CSV of the labels' kind, to keep its column names."""
    for path in data.label_files:
        lf, _ = read_label_csv(path)
        if lf is not None and lf.kind == data.label_kind and lf.header and len(lf.header) >= 2:
            return lf.header[:2]
    return None


def transitions(issues: LabelIssues) -> list[dict]:
    names = issues.classes
    counts = Counter((names[issues.given[i]], names[issues.suggested[i]]) for i in issues.order)
    return [{"given": g, "suggested": s, "erasers": n} for (g, s), n in counts.most_common()]


def write_report(out: Path, *, data: EraserSet, issues: LabelIssues, cv: CrossVal,
                 config: RunConfig, settings: dict, truth: dict | None, top: int,
                 write_clean: str | None) -> tuple[list[str], dict]:
    """All output files into ``out`` (staged: they appear together or not at all); returns
    their names and the summary."""
    from search.plots import error_grid

    files = []
    with staged_output(out) as stage:
        files.append(write_issues(stage / "label_issues.csv", issues).name)
        files.append(write_csv(stage / "label_quality.csv", quality_rows(issues, cv)).name)
        shown = issues.order[:top]
        ids = [issues.ids[i] for i in shown]
        size = min(128, data.image_size)
        images = data.images(size, ids) if ids else np.zeros((0, 6, size, size), np.uint8)
        names = issues.classes
        labels = [f"{issues.ids[i]}\n{names[issues.given[i]]}->{names[issues.suggested[i]]}"
                  for i in shown]
        error_grid(images, labels, [float(issues.quality[i]) for i in shown],
                   stage / "top_suspects.png",
                   title=f"Top {len(ids)} suspects: given->suggested, p(given)")
        files.append("top_suspects.png")
        if write_clean:
            files.append(write_cleaned(stage / "labels_cleaned.csv", issues, write_clean,
                                       header=cleaned_header(data)).name)
        summary = {**settings, "erasers": len(issues.ids), "flagged": len(issues.order),
                   "flagged_share": round(len(issues.order) / max(len(issues.ids), 1), 4),
                   "transitions": transitions(issues), "folds": cv.fold_scores,
                   "oof_metrics": _oof_metrics(cv, data), "truth": truth,
                   "train_seconds": round(cv.seconds, 1), "config": config.to_dict()}
        summary["caution"] = caution(summary)
        (stage / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        files.append("summary.json")
        (stage / "summary.md").write_text(_summary_md(summary, config, write_clean))
        files.append("summary.md")
    return files, summary


def _oof_metrics(cv: CrossVal, data: EraserSet) -> dict:
    from sklearn.metrics import roc_auc_score

    m = evaluate(cv.probs, data.targets)
    out = {k: round(v, 4) for k in ("graded_ap", "defect_ap", "graded_f1")
           if math.isfinite(v := m.get(k, math.nan))}
    columns = [("defect", data.defect, 3)]
    if data.label_kind == MULTICLASS:  # binary labels say nothing about the kind
        columns += [("print", data.targets[:, 0], 0), ("physical", data.targets[:, 1], 1)]
    for name, y, col in columns:
        if 0 < y.sum() < len(y):
            out[f"{name}_auroc"] = round(float(roc_auc_score(y, cv.probs[:, col])), 4)
    return out


WEAK_AUROC = 0.8  # below this the flags say more about the model than about the labels
MANY_FLAGGED = 0.15


def caution(summary: dict) -> str | None:
    """A warning when the flags are probably the model's mistakes rather than label errors."""
    metrics = summary["oof_metrics"]
    auroc = metrics.get("defect_auroc", math.nan)
    # A model can separate defective from good on print defects alone and still be blind to
    # physical ones: it then cannot find a missed physical defect, so the weakest kind counts.
    weakest = min(((metrics[f"{k}_auroc"], k) for k in ("print", "physical")
                   if f"{k}_auroc" in metrics), default=(math.inf, ""))
    # an undefined AUROC (no defective or no good eraser) says nothing good about the model
    if not auroc >= WEAK_AUROC or summary["flagged_share"] > MANY_FLAGGED:
        return (f"Caution: the cross-validated model separates defective from good erasers "
                f"only with AUROC {auroc:.2f} and flags {100 * summary['flagged_share']:.0f} % "
                "of the erasers; with a weak model most flags are its own mistakes. Train a "
                "stronger configuration (more epochs, a better trial) before cleaning, or keep "
                "to --missed-only and look at top_suspects.png first.")
    if not weakest[0] >= WEAK_AUROC:
        return (f"Caution: the cross-validated model recognises {weakest[1]} defects only "
                f"with AUROC {weakest[0]:.2f}, so it cannot find {weakest[1]} defects "
                "labelled good, and its flags of that kind are mostly its own mistakes. Train "
                "a stronger configuration (a better trial, more pixels, the NORMAL channel "
                "for physical defects) before trusting the list.")
    return None


def _summary_md(s: dict, config: RunConfig, write_clean: str | None) -> str:
    lines = [
        "# Suspected label errors",
        "",
        f"{s['flagged']} of {s['erasers']} erasers flagged ({100 * s['flagged_share']:.1f} %) "
        f"by confident learning (cleanlab `find_label_issues`, filter `{s['filter_by']}`) on "
        f"out-of-fold probabilities from {s['n_folds']}-fold cross-validation "
        f"(seed {s['seed']}).",
        "",
        f"Model: {describe(config.model)}; {config.train.epochs} epochs max "
        f"({s['config_source']}).",
        "",
        "Out-of-fold scores against the given (noisy) labels: "
        + ", ".join(f"{k} {v:.3f}" for k, v in s["oof_metrics"].items()) + ".",
        "",
    ]
    if s["caution"]:
        lines += [f"**{s['caution']}**", ""]
    if s["truth"]:
        t = s["truth"]
        lines += [
            f"Against the true labels ({t['file']}): {t['found']} of {t['mislabelled']} "
            f"mislabelled erasers found, precision {t['precision']:.2f}, recall "
            f"{t['recall']:.2f}.",
            "",
        ]
    lines += ["## Given -> suggested", "", markdown_table(s["transitions"]), "",
              "## Folds", "", markdown_table(s["folds"]), "",
              "## Files", "",
              "- `label_issues.csv`: flagged erasers, most suspicious first",
              "- `label_quality.csv`: every eraser's out-of-fold probabilities and quality",
              "- `top_suspects.png`: the most suspicious erasers", ""]
    if write_clean:
        done = {"drop": "dropped", "relabel": "relabelled"}[write_clean]
        lines += [f"- `labels_cleaned.csv`: the labels with the flagged erasers {done} (use "
                  "with `--labels`)", ""]
    lines += ["![top suspects](top_suspects.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    from data.cli import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m search.label_issues", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("data", help="folder of .npy/PNG files, arrays.zip or images.zip (with the "
                   "label CSVs next to them)")
    p.add_argument("--labels", nargs="+", metavar="CSV",
                   help="label CSV(s); default: the CSVs found next to the images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", help="use this study's best trial's configuration")
    src.add_argument("--config", help="run configuration JSON (train.py --print-config)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study; default: "
                   "$OPTUNA_STORAGE, else sqlite:///studies.db")
    p.add_argument("--trial", type=int, default=None, help="use this trial instead of the best")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of the config")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.add_argument("--filter-by", choices=FILTERS, default="prune_by_noise_rate",
                   help="cleanlab's rule for flagging")
    p.add_argument("--missed-only", action="store_true",
                   help="flag only erasers labelled good that look defective (missed defects, "
                   "the annotator's usual error)")
    p.add_argument("--max-flagged", type=int, default=None,
                   help="keep at most this many of the most suspicious")
    p.add_argument("--top", type=int, default=16, help="erasers shown in top_suspects.png")
    p.add_argument("--truth", default=None, help="true labels of a synthetic set "
                   "(ID,...,flipped); default: truth/clean_labels.csv next to the data if "
                   "present")
    p.add_argument("--write-cleaned", nargs="?", const="relabel", choices=CLEAN_ACTIONS,
                   default=None, help="also write labels_cleaned.csv: flagged erasers "
                   "relabelled with the suggestion (or dropped with 'drop')")
    p.add_argument("--out", default="reports/label_issues", help="output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="decoded-image cache")
    p.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="before training, time one epoch of the configuration here and print "
                   "how long the cross-validation will take")
    p.add_argument("--dry-run", action="store_true",
                   help="check data and configuration, print the plan, train nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def print_estimate(config: RunConfig, n: int, folds: int, device: torch.device) -> None:
    """How long the cross-validation will take here, from one short timed epoch."""
    from search.estimate import EstimateError, duration, epoch_seconds

    print("budget  timing one epoch of the configuration ...", flush=True)
    try:
        epoch = epoch_seconds(config, n - n // folds, n // folds, device)
    except EstimateError as exc:
        print(f"budget  no estimate: the configuration {exc}")
        return
    epochs = config.train.epochs
    print(f"budget  about {duration(epoch)} per epoch here; {folds} folds x up to {epochs} "
          f"epochs: at most about {duration(folds * epochs * epoch)}")


def load_run_config(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The configuration to cross-validate and where it came from.

    Raises ``StudyError`` (unknown study, no finished trial, parameters that do not replay)
    and ``RunFileError`` (a bad run file).
    """
    if args.config:
        config = load_config(args.config)
        source = f"run file {args.config}"
    else:
        from search.export import select_trial
        from search.study import StudyError, load_study, open_storage, storage_url

        study = load_study(args.study, open_storage(storage_url(args.storage)))
        trial = select_trial(study, args.trial)
        try:
            config = trial_config(trial, study.user_attrs.get("space", {}))
        except ValueError as exc:
            raise StudyError(f"{exc}; pass --trial with another or use --config.") from None
        source = f"study {args.study}, trial {trial.number}"
    if args.epochs is not None:
        config = replace(config, train=replace(config.train, epochs=args.epochs))
    return config, source


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from data import DataError, SplitError, format_problems, load_data
    from data.cli import fail, progress_bar, setup_logging
    from search.device import DeviceError, describe_device, resolve_device
    from search.study import StudyError
    from search.train import NonFiniteLossError, RunFileError

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    for name, value, low in (("--folds", args.folds, 2), ("--top", args.top, 0),
                             ("--epochs", args.epochs, 1), ("--max-flagged", args.max_flagged, 1)):
        if value is not None and value < low:
            return fail(f"{name} must be at least {low}, not {value}.")
    try:
        config, source = load_run_config(args)
        device = resolve_device(args.device)
    except RunFileError as exc:
        return fail(f"--config: {exc}")
    except (StudyError, DeviceError) as exc:
        return fail(str(exc))

    update, close = progress_bar("loading data")
    try:
        data = load_data(args.data, args.labels, cache_dir=args.cache_dir, progress=update)
    except DataError as exc:
        close()
        return fail(f"{args.data} cannot be used:\n{format_problems(exc.problems)}\n"
                    "Run `python -m data.check` on it for the full report.")
    close()
    truth_path = Path(args.truth) if args.truth else truth_file(Path(args.data))
    print(f"config  {describe(config.model)} ({source})")
    print(f"data    {len(data)} erasers ({data.label_kind} labels), {args.folds} folds, "
          f"{config.train.epochs} epochs max each, device {describe_device(device)}")
    if args.estimate:
        print_estimate(config, len(data), args.folds, device)
    if args.dry_run:
        print(f"dry run: would train {args.folds} models and write {args.out}/; nothing "
              "trained.")
        return 0

    epochs = config.train.epochs
    bar = tqdm(total=args.folds * epochs, desc="cross-validation", unit="epoch",
               dynamic_ncols=True)

    def on_epoch(fold: int, r: EpochReport) -> None:
        bar.n = fold * epochs + r.epoch
        bar.set_postfix(fold=f"{fold + 1}/{args.folds}", score=f"{r.score:.3f}")

    try:
        cv = out_of_fold_probs(config, data, folds=args.folds, seed=args.seed, device=device,
                               on_epoch=on_epoch)
    except SplitError as exc:
        return fail(str(exc))
    except NonFiniteLossError as exc:
        return fail(f"training stopped: {exc}")
    except ValueError as exc:  # a configuration the model refuses on these data
        return fail(f"the configuration cannot be trained on these data: {exc}")
    finally:
        bar.close()

    try:
        issues = find_issues(data.ids, data.targets, cv.probs, label_kind=data.label_kind
                             or MULTICLASS, filter_by=args.filter_by,
                             max_flagged=args.max_flagged, missed_only=args.missed_only)
        truth = None
        if truth_path is not None:
            flipped = [k for k, f in read_truth(truth_path).items() if f]
            truth = {"file": str(truth_path),
                     **precision_recall(issues.flagged_ids, set(flipped) & set(data.ids))}
    except NoiseError as exc:
        return fail(str(exc))
    settings = {"n_folds": args.folds, "seed": args.seed, "filter_by": args.filter_by,
                "missed_only": args.missed_only,
                "config_source": source, "device": str(device)}
    out = Path(args.out)
    try:
        files, summary = write_report(out, data=data, issues=issues, cv=cv, config=config,
                                      settings=settings, truth=truth, top=args.top,
                                      write_clean=args.write_cleaned)
    except OSError as exc:
        return fail(f"cannot write into {out}: {exc}.")

    print(f"\n{len(issues.order)} of {len(data)} erasers flagged as suspected mislabels "
          f"({args.filter_by}).")
    for row in issues.rows()[:10]:
        print(f"  {row['rank']:3d}. {row['id']}  {row['given_label']} -> "
              f"{row['suggested_label']}  (p given {row['quality']:.3f})")
    if summary["caution"]:
        print(textwrap.fill(summary["caution"], 99))
    if truth:
        print(f"against {truth['file']}: precision {truth['precision']:.2f}, recall "
              f"{truth['recall']:.2f} ({truth['found']}/{truth['mislabelled']} found)")
    print(f"wrote   {', '.join(files)} to {out}/")
    print(f"next    python run_study.py --data {args.data} --flagged {out / 'label_issues.csv'}"
          " ...  (tunes the weight of the flagged erasers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
