"""Figures and tables of a study for the write-up, tied together in one report.md.

    python report.py --study NAME [--storage URL] [--artifact-dir DIR] [--out reports/NAME]
                     [--style paper|slides] [--flagged label_issues.csv]

Follows the write-up's sections (``reporting.study_report``): data, methodology,
experimental setup, results; every figure PDF + 300 dpi PNG in one style, every table
markdown + booktabs LaTeX + CSV. Nothing is retrained. Without the study's data (moved? pass
--data) or weights (pass --artifact-dir) the report still holds everything the study itself
stored, and says what it left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from cli.checks import at_least, bad_number, folder_problem
from cli.common import HelpFormatter, add_study_location, fail, setup_logging
from data.cache import default_cache_dir
from data.noise import NoiseError
from reporting.plots import STYLES
from reporting.study_report import build_report, read_flagged_list
from search.export import select_trial
from search.study import (
    StudyError,
    artifact_dir_for,
    load_study,
    mask_url,
    open_existing_storage,
    storage_url,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--study", required=True, help="study name")
    add_study_location(p)
    p.add_argument("--trial", type=int, default=None, help="report this trial instead of the "
                   "best")
    p.add_argument("--data", default=None, help="the study's data, if moved since the study")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="decoded-image cache")
    p.add_argument("--style", choices=sorted(STYLES), default="paper",
                   help="paper: 3.3 or 7 in wide, 8 pt text; slides: 10 x 5.6 in, 14 pt")
    p.add_argument("--flagged", metavar="CSV", help="the flagged list the study was run with "
                   "(run_study.py --flagged), for the label-noise examples")
    p.add_argument("--no-predict", action="store_true",
                   help="skip the figures that recompute validation probabilities")
    p.add_argument("--out", default=None, help="output folder (default: reports/<study>)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the study and print what would be written; write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(args.storage)
    problem = (bad_number([("--trial", args.trial, at_least(0))])
               or folder_problem(args.out or Path("reports") / args.study, "--out")
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    try:
        storage = open_existing_storage(url)
        study = load_study(args.study, storage)
        best = select_trial(study, args.trial)
        flagged = read_flagged_list(study, args.flagged)
    except StudyError as exc:
        return fail(str(exc))
    except NoiseError as exc:
        return fail(f"--flagged: {exc}")
    out = Path(args.out or Path("reports") / args.study)
    artifact_dir = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url)
    n = len(study.get_trials(deepcopy=False))
    print(f"study   {args.study} in {mask_url(url)}: {n} trials, reporting trial {best.number} "
          f"({best.value:.4f})")
    if args.dry_run:
        print(f"dry run: would write report.md, figures and tables to {out}/; nothing written.")
        return 0
    try:
        r = build_report(study, best, out, storage=storage, artifact_dir=artifact_dir,
                         data_path=args.data, cache_dir=args.cache_dir,
                         predict=not args.no_predict, style=args.style, flagged=flagged)
    except OSError as exc:
        return fail(f"cannot write the report into {out}: {exc}.")
    for note in r.notes:
        print(f"note    {note}")
    print(f"wrote   {len(r.files)} files to {out}/; start with {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
