"""Trial overhead: what a study spends between trials, and what a new process spends first.

1. In one process on SQLite (the data stay loaded): the seconds from the end of one trial's
   training to the first training batch of the next one, split into recording the trial
   (metrics, checkpoint and figures as artifacts), Optuna (tell, sampler, ask) and setting up
   the next run (model, optimiser, batches). Measured by wrapping ``search.objective``'s
   ``train`` and the ``DeviceBatches`` it uses; the baseline is one training epoch of the same
   trials. Target: under 0.5 s.
2. A new ``run_study.py`` process: seconds from its start to its first training batch with a
   cold decoded-image cache (a fresh ``--cache-dir``) and with a warm one (reused), each with
   a fresh study; the baseline is the warm start.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from bench._common import add_common_args, begin, ratio_line, synthetic, table, workdir
from cli.common import HelpFormatter, fail

TARGET_S = 0.5
FIRST_STEP = "FIRST_TRAINING_BATCH"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.trial_overhead", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p, n=256)
    p.add_argument("--size", type=int, default=48, help="input size of every trial")
    p.add_argument("--trials", type=int, default=14,
                   help="trials in the in-process study (TPE samples from trial 11 on)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    p.add_argument("--starts", type=int, default=2,
                   help="new processes timed per cache state (cold, warm); the fastest counts; "
                   "0 skips this part")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _space(args: argparse.Namespace):
    from search.space import SearchSpace

    return SearchSpace(sizes=(args.size,), epochs=args.epochs, patience=args.epochs,
                       base_widths=(16, 24), depth=(3, 4), batch_sizes=(32,), seed=args.seed)


def in_process(folder: Path, tmp: Path, args: argparse.Namespace) -> dict:
    """Run a study in this process and time each boundary between trials."""
    import optuna
    import torch

    import search.objective
    import training.loop
    from reporting.trial_report import dashboard_hook
    from search.session import make_objective, prepare, run

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    events: list[dict[str, float]] = []
    real_train, real_batches = search.objective.train, training.loop.DeviceBatches

    class TimedBatches(real_batches):
        def epoch(self, shuffle: bool = True):
            for i, item in enumerate(super().epoch(shuffle)):
                if shuffle and i == 0 and "first_step" not in events[-1]:
                    events[-1]["first_step"] = time.perf_counter()
                yield item

    def timed_train(*a, **k):
        events[-1]["train_start"] = time.perf_counter()
        try:
            return real_train(*a, **k)
        finally:
            events[-1]["train_end"] = time.perf_counter()

    session = prepare(folder, study_name="overhead", storage_url=f"sqlite:///{tmp}/in.db",
                      space=_space(args), sampler="tpe", pruner="none", seed=args.seed,
                      artifact_dir=tmp / "artifacts", cache_dir=tmp / "cache")
    objective = make_objective(session, torch.device("cpu"),
                               on_result=[dashboard_hook(session)])

    def timed_hook(hook):
        def call(trial, result):
            t0 = time.perf_counter()
            try:
                return hook(trial, result)
            finally:
                events[-1]["hooks"] = events[-1].get("hooks", 0.0) + time.perf_counter() - t0
        return call

    # the on_result hooks (dashboard figures and notes) are timed apart from the rest
    objective.on_result = [timed_hook(h) for h in objective.on_result]

    def timed_objective(trial):
        events.append({"start": time.perf_counter()})
        try:
            return objective(trial)
        finally:
            events[-1]["end"] = time.perf_counter()

    search.objective.train, training.loop.DeviceBatches = timed_train, TimedBatches
    try:
        run(session, timed_objective, n_trials=args.trials)
    finally:
        search.objective.train, training.loop.DeviceBatches = real_train, real_batches

    rows = []
    for prev, cur in itertools.pairwise(events):
        if not {"train_end", "end"} <= set(prev) or "first_step" not in cur:
            continue  # a failed trial: no boundary to time
        hooks = prev.get("hooks", 0.0)
        rows.append({"record": prev["end"] - prev["train_end"] - hooks, "hooks": hooks,
                     "optuna": cur["start"] - prev["end"],
                     "setup": cur["first_step"] - cur["start"],
                     "total": cur["first_step"] - prev["train_end"]})
    trained = [e["train_end"] - e["first_step"] for e in events
               if {"first_step", "train_end"} <= set(e)]
    return {"rows": rows, "epoch_s": sum(trained) / max(1, len(trained)) / args.epochs}


def first_step_seconds(cmd: list[str], env: dict) -> float:
    """Seconds from starting ``cmd`` (a --child run) to the first training batch it prints."""
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith(FIRST_STEP):
            return float(line.split()[1]) - t0
    raise RuntimeError(f"the child process reached no training step (exit {out.returncode}):"
                       f"\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def new_process(folder: Path, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    """Fastest time to the first training batch of a new process, per cache state."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("OPTUNA_STORAGE", None)
    common = ["--data", str(folder), "--n-trials", "1", "--epochs", "1", "--sizes",
              str(args.size), "--seed", str(args.seed), "--device", "cpu"]
    if args.threads:
        common = [*common, "--threads-hint", str(args.threads)]

    def cmd(cache: Path, study: Path) -> list[str]:
        return [sys.executable, "-m", "bench.trial_overhead", "--child", *common,
                "--cache-dir", str(cache), "--study", "s", "--storage",
                f"sqlite:///{study}/s.db", "--artifact-dir", str(study / "artifacts")]

    first_step_seconds(cmd(tmp / "warm", tmp / "fill"), env)  # fills the warm cache
    times: dict[str, list[float]] = {"cold": [], "warm": [], "imports": []}
    for k in range(args.starts):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", "import run_study"], env=env, cwd=root,
                       check=True)
        times["imports"].append(time.time() - t0)
        # a fresh study each time: only the cache differs between the two
        times["cold"].append(first_step_seconds(cmd(tmp / f"cold{k}", tmp / f"c{k}"), env))
        times["warm"].append(first_step_seconds(cmd(tmp / "warm", tmp / f"w{k}"), env))
    return {k: min(v) for k, v in times.items()}


def child(argv: list[str]) -> int:
    """Run ``run_study.main(argv)`` and report the moment of its first training batch."""
    if "--threads-hint" in argv:
        i = argv.index("--threads-hint")
        import torch

        torch.set_num_threads(int(argv[i + 1]))
        argv = argv[:i] + argv[i + 2:]
    import run_study
    import training.loop

    real = training.loop.DeviceBatches

    class FirstBatchExits(real):
        def epoch(self, shuffle: bool = True):
            for item in super().epoch(shuffle):
                if shuffle:
                    print(f"{FIRST_STEP} {time.time():.6f}", flush=True)
                    os._exit(0)  # the measurement is taken; the rest is not timed
                yield item

    training.loop.DeviceBatches = FirstBatchExits
    return run_study.main(argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        return child(args.child)
    if args.trials < 2 or args.epochs < 1 or args.starts < 0 or args.size < 16:
        return fail("--trials must be at least 2, --epochs at least 1, --starts not negative "
                    "and --size at least 16.")
    code = begin(args, f"; {args.trials} trials of {args.epochs} epoch(s) at {args.size} px in "
                 f"one process (TPE, SQLite); {args.starts} new process(es) per cache state")
    if code is not None:
        return code

    with workdir() as tmp:
        folder = synthetic(args, tmp)
        res = in_process(folder, tmp, args)
        rows = res["rows"]
        if not rows:
            return fail("no two consecutive trials finished, so no boundary could be timed; "
                        "see the study's fail reasons (run with fewer constraints).")

        def stat(key: str) -> tuple[float, float]:
            values = [r[key] for r in rows]
            return sum(values) / len(values), max(values)

        print()
        print(table([[name, f"{stat(k)[0]:.3f}", f"{stat(k)[1]:.3f}"] for name, k in (
            ("record the trial (attributes, checkpoint and history artifacts)", "record"),
            ("on_result hooks (dashboard figures and note)", "hooks"),
            ("Optuna: tell, sampler, ask, run_trials loop", "optuna"),
            ("next run: config, model, optimiser, first batch", "setup"),
            ("total: end of training -> next first batch", "total"))],
            ["between trials (s)", "mean", "max"]))
        mean, worst = stat("total")
        verdict = "met" if mean < TARGET_S else "NOT met"
        print()
        print(ratio_line("trial overhead / one training epoch", mean / res["epoch_s"],
                         f"(overhead {mean:.2f} s mean, {worst:.2f} s max over {len(rows)} "
                         f"boundaries; epoch {res['epoch_s']:.2f} s; target < {TARGET_S} s "
                         f"{verdict})"))
        if not args.starts:
            return 0
        starts = new_process(folder, tmp, args)
        print(ratio_line("new process to first training batch, cold / warm cache",
                         starts["cold"] / starts["warm"],
                         f"(cold {starts['cold']:.1f} s, warm {starts['warm']:.1f} s, of which "
                         f"importing run_study {starts['imports']:.1f} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
