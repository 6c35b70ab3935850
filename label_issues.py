"""``python label_issues.py DATA_PATH (--study NAME | --config run.json)``: find labels
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

The cross-validation is ``training.crossval``, the ranking (pure numpy + cleanlab)
``data.noise``, the report ``reporting.label_report``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cli.checks import EPOCHS, SEED, at_least, bad_number, folder_problem, int_between
from cli.common import EXIT_USAGE, HelpFormatter, add_study_location, fail, setup_logging
from cli.loading import load_or_fail
from data import SplitError
from data.cache import default_cache_dir
from data.labels import MULTICLASS
from data.noise import (
    CLEAN_ACTIONS,
    NoiseError,
    find_issues,
    near_chance_kinds,
    precision_recall,
    read_truth,
)
from model import describe
from reporting.label_report import truth_file, write_report
from search.estimate import EstimateError, duration, epoch_seconds
from search.export import select_trial
from search.space import trial_config
from search.study import StudyError, load_study, open_existing_storage, storage_url
from training.config import RunConfig, RunFileError, load_config
from training.crossval import out_of_fold_probs
from training.device import DeviceError, describe_device, resolve_device
from training.loop import EpochReport, NonFiniteLossError

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python label_issues.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("data", help="folder of .npy/PNG files, arrays.zip or images.zip (with the "
                   "label CSVs next to them)")
    p.add_argument("--labels", nargs="+", metavar="CSV",
                   help="label CSV(s); default: the CSVs found next to the images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", help="use this study's best trial's configuration")
    src.add_argument("--config", help="run configuration JSON (train.py --print-config)")
    add_study_location(p, artifact_dir=False)
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
        study = load_study(args.study, open_existing_storage(storage_url(args.storage)))
        trial = select_trial(study, args.trial)
        try:
            config = trial_config(trial, study.user_attrs.get("space", {}))
        except ValueError as exc:
            raise StudyError(f"{exc}; pass --trial with another or use --config.") from None
        source = f"study {args.study}, trial {trial.number}"
    if args.epochs is not None:
        config = replace(config, train=replace(config.train, epochs=args.epochs))
    return config, source


# A command's main (about 100 lines): check, load, estimate, cross-validate, rank, write and
# print, in that order, each step one library call and the message that goes with it.
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    problem = (bad_number([("--folds", args.folds, int_between(2, 20)),
                           ("--top", args.top, int_between(0, 256)),
                           ("--epochs", args.epochs, EPOCHS),
                           ("--max-flagged", args.max_flagged, at_least(1)),
                           ("--trial", args.trial, at_least(0)), ("--seed", args.seed, SEED)])
               or folder_problem(args.out, "--out")
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    try:
        config, source = load_run_config(args)
        device = resolve_device(args.device)
    except RunFileError as exc:
        return fail(f"--config: {exc}")
    except (StudyError, DeviceError) as exc:
        return fail(str(exc))

    data = load_or_fail(args.data, args.labels, cache_dir=args.cache_dir)
    if data is None:
        return EXIT_USAGE
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

    label_kind = data.label_kind or MULTICLASS
    blind = near_chance_kinds(data.targets, cv.probs, label_kind)
    for kind, auroc in blind.items():
        print(f"note    the cross-validated model tells {kind} defects apart only with AUROC "
              f"{auroc:.2f} (chance: 0.50), so its {kind} flags would be its own mistakes: none "
              f"are flagged. Train a stronger configuration first (a better --study trial, "
              "more --epochs), then look for label errors again.")
    try:
        issues = find_issues(data.ids, data.targets, cv.probs, label_kind=label_kind,
                             filter_by=args.filter_by, max_flagged=args.max_flagged,
                             missed_only=args.missed_only, blind=blind)
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
    if summary["caution"] or blind or not len(issues.order):
        # Never point a search at a list this run itself doubts (or at an empty one).
        print("next    look at top_suspects.png and summary.md; with a stronger configuration "
              "run this again before passing a list to run_study.py --flagged")
    else:
        print(f"next    python run_study.py --data {args.data} --flagged "
              f"{out / 'label_issues.csv'} ...  (tunes the weight of the flagged erasers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
