"""``python check_data.py DATA_PATH [--labels CSV ...]``: is this delivery usable?

Reads every image and label once, prints a summary and every problem found, and exits 0 when
the data can be used (warnings allowed) or 2 when it cannot: broken files, or labels with
nothing to learn (no defective or no good eraser).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.checks import folder_problem
from cli.common import HelpFormatter, fail, progress_bar, setup_logging
from data.cache import default_cache_dir
from data.dataset import format_summary, scan
from data.errors import DataError, format_problems
from data.kinds import label_problems
from data.labels import find_label_csvs
from data.sources import discover


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python check_data.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("data", help="folder of .npy or PNG files, arrays.zip, images.zip, or a "
                   "folder holding them and the label CSVs")
    p.add_argument("--labels", nargs="+", metavar="CSV", default=None,
                   help="label CSV(s): binary and/or multi-class; default: the CSVs next to "
                   "the images")
    p.add_argument("--no-labels", action="store_true",
                   help="check the images only (e.g. a test set without labels)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="where decoded images are cached for the next run")
    p.add_argument("--no-cache", action="store_true", help="do not write the cache")
    p.add_argument("--dry-run", action="store_true",
                   help="only find the images and label files; decode nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.dry_run:
        return _dry_run(args)
    problem = None if args.no_cache else folder_problem(args.cache_dir, "--cache-dir")
    if problem:
        return fail(problem)
    update, close = progress_bar("checking")
    try:
        eraser_set, problems = scan(
            args.data, args.labels, require_labels=not args.no_labels,
            cache_dir=None if args.no_cache else args.cache_dir, progress=update)
    except DataError as exc:
        close()
        print(format_problems(exc.problems), file=sys.stderr)
        print(f"\n{args.data} cannot be used as it is; fix the errors above.", file=sys.stderr)
        return 2
    close()
    if eraser_set is not None and eraser_set.targets is not None:
        problems += label_problems(eraser_set.targets, eraser_set.label_kind,
                                   ", ".join(eraser_set.label_files))
    if eraser_set is not None:
        print(format_summary(eraser_set.summary()))
    n_err = sum(p.level == "error" for p in problems)
    n_warn = len(problems) - n_err
    if problems:
        print("\n" + format_problems(problems), file=sys.stderr if n_err else None)
    if eraser_set is None or n_err:
        print(f"\nNOT USABLE: {n_err} error(s), {n_warn} warning(s). Fix the errors above and "
              "run the check again.", file=sys.stderr)
        return 2
    print(f"\nOK: {len(eraser_set)} erasers usable ({n_warn} warning(s)).")
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    try:
        source, notes = discover(args.data)
    except DataError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        return 2
    path = Path(args.data)
    labels = args.labels or find_label_csvs(path if path.is_dir() else path.parent)
    print(f"images: {source.describe()} ({len(source.ids())} erasers)")
    print(f"labels: {', '.join(map(str, labels)) or 'none found'}")
    for p in notes + source.problems:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
