"""The delivery suite: the whole product, as a user runs it, on unlike product lines.

    python -m bench.suite --budgets 10m 30m --work DIR [--held-out] [--write]

A default earns its place on several unlike deliveries, never on one. For each preset of
``data.synth.SUITE`` (and, with ``--held-out``, the presets no default is ever chosen on,
reported apart) it makes a training delivery of 900 erasers with noisy labels (10 % of the
defective labelled good, 2 % of the good labelled defective) and a test delivery of 450 others
with clean labels, from seeds no test, demo or portfolio search uses. Per budget it runs
``run_study.py --budget B`` as a user would, exports with ``export_best.py`` (ensemble
selection included) and scores the exported model on the test delivery at its own thresholds:
graded one-vs-all AUC-PR per class as the graders compute it, defect AUC-PR and F1.
``--write`` appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path

from bench._common import machine, table
from bench.time_to_quality import RESULTS, run_budget
from cli.common import HelpFormatter, fail
from data import load_data
from data.synth import HELD_OUT, PRESETS, SUITE, generate
from search.plan import parse_budget

N_TRAIN, N_TEST = 900, 450
NOISE, FP_NOISE = 0.10, 0.02
SEED0 = 9100  # delivery k: seeds SEED0 + 10 k (train) and SEED0 + 10 k + 1 (test)
COLUMNS = {"graded_ap": "graded AP", "print_error_ap": "print AP",
           "physical_error_ap": "phys. AP", "no_defect_ap": "no-defect AP",
           "defect_ap": "defect AP", "defect_f1": "defect F1"}
TARGETS = {"print_error_ap": 0.70, "defect_ap": 0.85}  # the suite's bar, per delivery


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--budgets", nargs="+", default=["10m", "30m"], help="run_study.py budgets")
    p.add_argument("--presets", nargs="+", default=list(SUITE), choices=list(PRESETS),
                   help="deliveries of the suite")
    p.add_argument("--held-out", action="store_true",
                   help=f"also the presets kept out of every choice ({', '.join(HELD_OUT)})")
    p.add_argument("--device", default="cpu", help="device for the studies")
    p.add_argument("--n-train", type=int, default=N_TRAIN, help="training erasers")
    p.add_argument("--n-test", type=int, default=N_TEST, help="held-out test erasers")
    p.add_argument("--size", type=int, default=310, help="side of the synthetic captures")
    p.add_argument("--study-args", default="",
                   help="more run_study.py arguments for every study (one string)")
    p.add_argument("--work", required=True, help="folder for data, studies and exports "
                   "(reused: each delivery is made once)")
    p.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p


def make_delivery(work: Path, name: str, k: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The training and test deliveries of preset ``name`` (made once, then reused)."""
    out = []
    for part, n, seed, noise, fp in (("train", args.n_train, SEED0 + 10 * k, NOISE, FP_NOISE),
                                     ("test", args.n_test, SEED0 + 10 * k + 1, 0.0, 0.0)):
        folder = work / name / part
        if not (folder / "labels_multiclass.csv").exists():
            generate(folder, n=n, seed=seed, size=args.size, noise=noise, fp_noise=fp,
                     style=PRESETS[name], workers=min(8, os.cpu_count() or 1), force=True)
        out.append(folder)
    return out[0], out[1]


def row(name: str, budget: str, run: dict) -> list[str]:
    test = run["test"]
    return [name, budget, f"{run['wall'] / 60:.1f}", f"{run['complete']}/{run['pruned']}",
            *(f"{test.get(k, math.nan):.3f}" for k in COLUMNS),
            f"{run['val'].get('graded_ap', math.nan):.3f}", run["architecture"]]


def report(results: list[tuple[str, str, dict]], args: argparse.Namespace) -> str:
    head = ["delivery", "budget", "min", "done/pruned", *COLUMNS.values(), "val graded AP",
            "exported"]
    suite = [row(n, b, r) for n, b, r in results if n not in HELD_OUT]
    kept = [row(n, b, r) for n, b, r in results if n in HELD_OUT]
    lines = [f"Machine: {machine()}.", "",
             f"Each delivery: {args.n_train} training erasers ({NOISE:.0%} of the defective "
             f"labelled good, {FP_NOISE:.0%} of the good labelled defective) and {args.n_test} "
             f"test erasers with clean labels, {args.size} px; test scores of the exported "
             "model at its own thresholds.", "", table(suite, head), ""]
    if kept:
        lines += ["Presets kept out of every choice of defaults:", "", table(kept, head), ""]
    missed = [f"{n} {b} ({COLUMNS[k]} {r['test'].get(k, math.nan):.3f} < {t})"
              for n, b, r in results for k, t in TARGETS.items()
              if not r["test"].get(k, 0) >= t]
    lines += [("Below the bar (print AP >= 0.70, defect AP >= 0.85): " + "; ".join(missed))
              if missed else "Every delivery meets the bar.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for b in args.budgets:
            parse_budget(b)
    except ValueError as exc:
        return fail(str(exc))
    names = list(dict.fromkeys([*args.presets, *(HELD_OUT if args.held_out else ())]))
    print(f"machine  {machine()}")
    print(f"plan     deliveries {', '.join(names)}; budgets {', '.join(args.budgets)} on "
          f"{args.device}; {args.n_train} train / {args.n_test} test erasers each")
    if args.dry_run:
        print("dry run: nothing run.")
        return 0
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.marks = []  # run_budget's time curve: not read here
    extra = args.study_args.split()
    results: list[tuple[str, str, dict]] = []
    for name in names:
        train_dir, test_dir = make_delivery(work, name, list(PRESETS).index(name), args)
        test = load_data(test_dir, cache_dir=work / "cache")
        for budget in args.budgets:
            t0 = time.monotonic()
            print(f"study    {name} {budget} ...", flush=True)
            run = run_budget(budget, train_dir, test, work, args,
                             name=f"suite_{name}_{budget}", extra=extra)
            results.append((name, budget, run))
            print(f"         {time.monotonic() - t0:.0f} s: " + ", ".join(
                f"{v} {run['test'].get(k, math.nan):.3f}" for k, v in COLUMNS.items()),
                flush=True)
            with open(work / "results.json", "w") as f:  # what ran so far, if cut short
                json.dump([{"delivery": n, "budget": b, **{k: r[k] for k in
                           ("wall", "complete", "pruned", "test", "val", "architecture")}}
                           for n, b, r in results], f, indent=1)
    text = report(results, args)
    print(text)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n## The delivery suite ({dt.date.today().isoformat()})\n\n"
                    f"`python -m bench.suite --budgets {' '.join(args.budgets)}"
                    + (" --held-out" if args.held_out else "")
                    + (f" --study-args '{args.study_args}'" if args.study_args else "")
                    + f"`\n\n{text}")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
