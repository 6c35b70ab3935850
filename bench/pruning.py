"""Pruning savings: the same study with ``--pruner none``, ``hyperband`` and ``median``.

Each pruner runs a study of the same number of trials with the same sampler seed, split,
search space and training seed, on a synthetic set, in this process (the path
``run_study.py`` takes, on SQLite); the studies advance one trial at a time in turn, so that
changes in the machine's load touch them alike. Per pruner: epochs trained in total (every
trial's epochs, pruned ones up to where they stopped), wall time of the training, and the
best validation graded AUC-PR (mean one-vs-all AUC-PR of print error, physical error and no
defect). The baseline is ``none``. Target: at least 3x fewer epochs with a best AUC-PR within
0.01 of the baseline's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench._common import add_common_args, begin, ratio_line, synthetic, table, workdir
from cli.common import HelpFormatter, fail

EPOCH_RATIO_TARGET = 3.0
AP_TOLERANCE = 0.01


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pruning", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p, n=240, size=96)
    p.add_argument("--size", type=int, default=32, help="input size of every trial")
    p.add_argument("--trials", type=int, default=14, help="trials per study")
    p.add_argument("--epochs", type=int, default=12,
                   help="max epochs per trial (Hyperband's max resource)")
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience (default: run_study's, max(3, epochs // 4))")
    p.add_argument("--pruners", nargs="+", default=["none", "hyperband", "median"],
                   choices=["none", "hyperband", "median"],
                   help="pruners to compare; the first is the baseline")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "gp"],
                   help="sampler (seeded with --seed)")
    p.add_argument("--subtle-rate", type=float, default=0.25,
                   help="share of subtle defects in the synthetic set (the demo's)")
    return p


def run_all(folder: Path, tmp: Path, args: argparse.Namespace) -> list[dict]:
    """One study per pruner, advanced one trial at a time in turn (so that a change in the
    machine's load touches every pruner alike); their epochs, wall time and best value."""
    import optuna
    import torch

    from reporting.trial_report import dashboard_hook
    from search.session import make_objective, prepare, run
    from search.space import SearchSpace

    space = SearchSpace(sizes=(args.size,), epochs=args.epochs,
                        patience=args.patience or max(3, args.epochs // 4),
                        base_widths=(16, 24), depth=(3, 4), batch_sizes=(32,), seed=args.seed)
    runs = []
    for pruner in args.pruners:
        session = prepare(folder, study_name=f"pruner_{pruner}",
                          storage_url=f"sqlite:///{tmp}/pruning.db", space=space,
                          sampler=args.sampler, pruner=pruner, seed=args.seed,
                          artifact_dir=tmp / "artifacts", cache_dir=tmp / "cache")
        runs.append({"pruner": pruner, "session": session, "wall": 0.0,
                     "objective": make_objective(session, torch.device("cpu"),
                                                 on_result=[dashboard_hook(session)])})
    for k in range(1, args.trials + 1):
        for r in runs:
            t0 = time.perf_counter()  # training only: the cache is warm, the study created
            run(r["session"], r["objective"], n_trials=k)
            r["wall"] += time.perf_counter() - t0
    states = optuna.trial.TrialState
    results = []
    for r in runs:
        trials = r["session"].study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == states.COMPLETE and t.value is not None]
        results.append({
            "pruner": r["pruner"], "wall": r["wall"],
            "epochs": sum(int(t.user_attrs.get("epochs_run", len(t.intermediate_values)))
                          for t in trials),
            "complete": len(complete), "pruned": sum(t.state == states.PRUNED for t in trials),
            "failed": sum(t.state == states.FAIL for t in trials),
            "best": max((t.value for t in complete), default=float("nan"))})
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials < 2 or args.epochs < 2 or args.size < 16:
        return fail("--trials and --epochs must be at least 2 and --size at least 16.")
    code = begin(args, f" -> {args.size} px; per pruner {args.trials} trials of up to "
                 f"{args.epochs} epochs, {args.sampler} sampler seed {args.seed}; pruners "
                 f"{', '.join(args.pruners)}")
    if code is not None:
        return code
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with workdir() as tmp:
        folder = synthetic(args, tmp, subtle_rate=args.subtle_rate)
        from data import load_data

        load_data(folder, cache_dir=tmp / "cache").images(args.size)  # warm for every pruner
        results = run_all(folder, tmp, args)
    base = results[0]
    print()
    print(table([[r["pruner"], f"{r['complete']}/{r['pruned']}/{r['failed']}", str(r["epochs"]),
                  f"{r['wall']:.0f}", f"{r['best']:.4f}"] for r in results],
                ["pruner", "complete/pruned/failed", "epochs trained", "wall s",
                 "best graded AUC-PR"]))
    print()
    for r in results[1:]:
        saved = base["epochs"] / max(1, r["epochs"])
        delta = r["best"] - base["best"]
        met = saved >= EPOCH_RATIO_TARGET and delta >= -AP_TOLERANCE
        print(ratio_line(f"epochs {base['pruner']} / {r['pruner']}", saved,
                         f"(best AUC-PR {r['best']:.4f} vs {base['best']:.4f}, difference "
                         f"{delta:+.4f}; target >= {EPOCH_RATIO_TARGET:.0f}x within "
                         f"{AP_TOLERANCE} {'met' if met else 'NOT met'})"))
        print(ratio_line(f"wall time {base['pruner']} / {r['pruner']}",
                         base["wall"] / max(1e-9, r["wall"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
