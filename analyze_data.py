"""``python analyze_data.py DATA_PATH [--labels CSV ...] [--out reports/data]``: see the data.

Writes class-balance tables, per-channel statistics and histograms, a sample grid per class
with all six channels, mean images, a separability table and ``report.md`` with one-line
findings computed from the data (``reporting.data_report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.checks import INPUT_SIZE, SEED, bad_number, folder_problem, int_between
from cli.common import EXIT_USAGE, HelpFormatter, fail, progress_bar, setup_logging
from cli.loading import load_or_fail
from data.cache import default_cache_dir
from data.split import SplitError
from reporting.data_report import analyze


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python analyze_data.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("data", help="folder of .npy or PNG files, arrays.zip, images.zip, or a "
                   "folder holding them and the label CSVs")
    p.add_argument("--labels", nargs="+", metavar="CSV", default=None,
                   help="label CSV(s); default: the CSVs next to the images")
    p.add_argument("--out", default="reports/data", help="folder for the report")
    p.add_argument("--size", type=int, default=128, help="side the images are analysed at")
    p.add_argument("--samples", type=int, default=4, help="erasers per class in the grids")
    p.add_argument("--folds", type=int, default=5,
                   help="folds of the split shown in the balance table (fold 0 = validation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the samples")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (shared with the other commands)")
    p.add_argument("--dry-run", action="store_true",
                   help="load and validate the data, print what would be written, write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    problem = (bad_number([("--size", args.size, INPUT_SIZE),
                           ("--samples", args.samples, int_between(1, 64)),
                           ("--folds", args.folds, int_between(2, 20)),
                           ("--seed", args.seed, SEED)])
               or folder_problem(args.out, "--out")
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    data = load_or_fail(args.data, args.labels, cache_dir=args.cache_dir, what="analysed")
    if data is None:
        return EXIT_USAGE
    out = Path(args.out)
    if args.dry_run:
        print(f"would analyse {len(data)} erasers at {min(args.size, data.image_size)} px "
              f"into {out}/ (report.md, tables, figures); nothing written.")
        return 0
    update, close = progress_bar("analysing")
    try:
        analysis = analyze(data, out, size=args.size, samples=args.samples, k=args.folds,
                           seed=args.seed, progress=update)
    except SplitError as exc:
        close()
        return fail(str(exc))
    except OSError as exc:
        close()
        return fail(f"cannot write the report into {out}: {exc}.")
    close()
    for line in analysis.findings:
        print(f"- {line}")
    print(f"\nwrote {len(analysis.files)} files to {out}/; start with {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

