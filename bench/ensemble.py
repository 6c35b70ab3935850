"""Ensemble selection at export, judged on clean held-out erasers.

    python -m bench.ensemble --work DIR [--pools 4 8] [--write]

For every study of a ``bench.suite`` work folder (each delivery's training study and its
test delivery of clean labels), from the trials' stored weights: the single best trial's test
scores, the Caruana blend chosen on validation (``search.ensemble``) with its test scores,
and whether export would ship it (a cross-fitted gain above its noise). The shipped model is
the blend where export chooses it and the single best elsewhere. Nothing is retrained.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

import numpy as np
import optuna

import model as model_lib
from bench._common import machine, table
from bench.time_to_quality import RESULTS
from cli.common import HelpFormatter
from data import load_data
from search.ensemble import blend, choose_ensemble
from search.export import ensemble_pool, fetch_checkpoint, select_trial, study_data
from training.scoring import predict_set

SHOWN = ("graded_ap", "print_error_ap", "physical_error_ap", "defect_ap")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ensemble", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--work", required=True, help="a bench.suite work folder")
    p.add_argument("--pools", type=int, nargs="+", default=[8], help="top trials drawn from")
    p.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    p.add_argument("--dry-run", action="store_true", help="list the studies, score nothing")
    return p


def scores(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {k: v for k, v in model_lib.evaluate(probs, targets).items() if k in SHOWN}


def judge(study: optuna.Study, work: Path, pool_size: int) -> dict:
    """Single best and validation-chosen blend of ``study``, scored on its test delivery."""
    delivery = study.study_name.split("_")[1:-1]
    test = load_data(work / "_".join(delivery) / "test", cache_dir=work / "cache")
    data, split = study_data(study, cache_dir=work / "cache")
    artifacts = work / "artifacts"
    best = select_trial(study)
    pool = ensemble_pool(study, best, pool_size)
    nets = [model_lib.model_from_checkpoint(fetch_checkpoint(t, artifacts)) for t in pool]
    val_ids = split.val_ids()
    rows = {k: i for i, k in enumerate(data.ids)}
    targets = data.targets[[rows[k] for k in val_ids]]
    val = [predict_set(n, data, val_ids).astype(np.float64) for n in nets]
    choice = choose_ensemble(val, targets, study.user_attrs["space"].get("metric", "graded_ap"))
    on_test = [predict_set(n, test).astype(np.float64) for n in nets]
    single = scores(on_test[0], test.targets)
    blended = scores(blend(on_test, choice.members, choice.weights), test.targets)
    return {"study": study.study_name, "pool": len(pool), "members": len(choice.members),
            "chosen": choice.chosen, "gain": choice.gain, "noise": choice.noise,
            "single": single, "blend": blended,
            "shipped": blended if choice.chosen else single}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work).resolve()
    url = f"sqlite:///{work / 'studies.db'}"
    names = ([s.study_name for s in optuna.get_all_study_summaries(url)]
             if (work / "studies.db").is_file() else [])
    print(f"machine  {machine()}")
    print(f"studies  {', '.join(names) or 'none'} in {work}")
    if args.dry_run:
        print("dry run: nothing scored.")
        return 0
    rows = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=url)
        for pool in args.pools:
            r = judge(study, work, pool)
            print(f"{name} pool {pool}: single {r['single']['graded_ap']:.3f}, blend "
                  f"{r['blend']['graded_ap']:.3f} ({r['members']} members), shipped "
                  f"{r['shipped']['graded_ap']:.3f}", flush=True)
            rows.append([name, str(pool), str(r["members"]),
                         "yes" if r["chosen"] else "no", f"{r['gain']:+.3f}",
                         f"{r['noise']:.3f}",
                         *(f"{r[w].get(k, math.nan):.3f}" for w in ("single", "blend")
                           for k in ("graded_ap", "print_error_ap", "physical_error_ap")),
                         f"{r['shipped']['graded_ap'] - r['single']['graded_ap']:+.3f}"])
    text = (f"Machine: {machine()}.\n\n" + table(rows, [
        "study", "pool", "members", "shipped", "cross-fitted gain", "noise",
        "single graded", "single print", "single phys.", "blend graded", "blend print",
        "blend phys.", "shipped - single (test graded)"]) + "\n")
    print(text)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n## Ensemble selection on the suite ({dt.date.today().isoformat()})\n\n"
                    f"`python -m bench.ensemble --work DIR --pools "
                    f"{' '.join(map(str, args.pools))}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
