"""Memory: peak resident memory of a study process against the size of its cached data set.

Runs ``run_study.py`` on a synthetic set as a child process, once with a cold decoded-image
cache (it decodes and resizes everything) and once with the warm cache, and reads each
child's peak RSS from inside it (``bench._peak``: ``VmHWM``). Baselines, each a process that
loads no data: one that imports torch, optuna and kornia; one that imports what a study
imports (``import run_study``: also scikit-learn, matplotlib, optuna-dashboard); and one that
also trains one step of a small network (the framework warm: oneDNN, autograd and the
optimiser's lazy imports). The figure is (peak - baseline) as a multiple of the cached data
set, the ``(N, 6, 310, 310)`` uint8 array the cache keeps on disk; and, free of every fixed
cost, the slope: extra peak per extra byte of data between the set and one half its size.
Target: under 1.5x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench._common import add_common_args, machine, ratio_line, synthetic, table, workdir
from bench._peak import MARK
from cli.common import HelpFormatter, fail

TARGET = 1.5
MIB = 2**20


def peak_rss(args: list[str], env: dict, cwd: Path | str) -> int:
    """Peak resident set size in bytes of ``python ARGS`` (which must succeed), read inside
    that process by :mod:`bench._peak`."""
    cmd = [sys.executable, "-m", "bench._peak", *args]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    marks = [line.split()[1] for line in out.stdout.splitlines() if line.startswith(MARK)]
    if out.returncode != 0 or not marks:
        raise RuntimeError(f"python {' '.join(args[:3])} ... exited with {out.returncode}:\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return int(marks[-1]) * 1024


FRAMEWORK_CHILD = """
import torch, run_study
from data import AugmentConfig, Preprocessor
from model import CNNConfig, build_model
net = build_model(CNNConfig(input_size=32))
pre = Preprocessor(range(6), [0.5] * 6, [0.2] * 6, AugmentConfig.from_strength(0.5, 0.5))
opt = torch.optim.AdamW(net.parameters())
net(pre(torch.randint(0, 256, (8, 6, 32, 32), dtype=torch.uint8), train=True)).mean().backward()
opt.step()
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p, n=384)
    p.add_argument("--size", type=int, default=64, help="input size of the study's trials")
    p.add_argument("--trials", type=int, default=1, help="trials of the study")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials < 1 or args.epochs < 1 or args.size < 16:
        return fail("--trials and --epochs must be at least 1 and --size at least 16.")
    if args.data and not Path(args.data).is_dir():
        return fail(f"--data {args.data} is not a folder; give a delivery folder, or leave "
                    "--data out for a synthetic set.")
    print(f"machine  {machine()}")
    print(f"plan     {args.data or f'{args.n} synthetic erasers at {args.source_size} px'}; "
          f"run_study.py with {args.trials} trial(s) of {args.epochs} epoch(s) at {args.size} "
          "px, cold then warm cache")
    if args.dry_run:
        print("dry run: nothing measured.")
        return 0

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("OPTUNA_STORAGE", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    def study(folder: Path, cache: Path, name: str) -> int:
        return peak_rss(
            [str(root / "run_study.py"), "--data", str(folder), "--study", name,
             "--storage", f"sqlite:///{cache.parent}/{name}.db", "--artifact-dir",
             str(cache.parent / f"{name}-artifacts"), "--cache-dir", str(cache),
             "--n-trials", str(args.trials), "--epochs", str(args.epochs), "--sizes",
             str(args.size), "--device", "cpu", "--seed", str(args.seed)], env, root)

    with workdir() as tmp:
        big = synthetic(args, tmp / "full")
        half = synthetic(argparse.Namespace(**{**vars(args), "n": max(2, args.n // 2)}),
                         tmp / "half") if not args.data else None
        base = {"imports torch, optuna, kornia": peak_rss(
                    ["-c", "import torch, optuna, kornia"], env, root),
                "imports run_study": peak_rss(["-c", "import run_study"], env, root),
                "framework warm (run_study + one step)": peak_rss(
                    ["-c", FRAMEWORK_CHILD], env, root)}
        peaks: dict[tuple[str, str], int] = {}
        sizes: dict[str, int] = {}
        for label, folder in (("full", big), ("half", half)):
            if folder is None:
                continue
            cache = tmp / label / "cache"
            for state in ("cold", "warm"):  # the cold run fills the cache the warm one reuses
                peaks[label, state] = study(folder, cache, f"{label}_{state}")
            native = sorted(cache.glob("*/native.npy"))
            if not native:
                return fail("the study left no decoded-image cache to measure against.")
            sizes[label] = native[0].stat().st_size

    dataset = sizes["full"]
    warm_fw = base["framework warm (run_study + one step)"]
    rows = [[name, f"{v / MIB:.0f}", "-", "-"] for name, v in base.items()]
    for (label, state), v in peaks.items():
        rows.append([f"study, {'all' if label == 'full' else 'half the'} erasers, {state} "
                     "cache", f"{v / MIB:.0f}",
                     f"{(v - base['imports torch, optuna, kornia']) / sizes[label]:.2f}",
                     f"{(v - warm_fw) / sizes[label]:.2f}"])
    print()
    print(f"cached data set {dataset / MIB:.0f} MiB (native uint8 of {args.n} erasers)")
    print(table(rows, ["process", "peak RSS MiB", "above imports / data set",
                       "above framework warm / data set"]))
    print()
    for state in ("cold", "warm"):
        r = (peaks["full", state] - warm_fw) / dataset
        print(ratio_line(f"study peak RSS above the warm framework / cached data set, {state} "
                         "cache", r, f"(target < {TARGET}x {'met' if r < TARGET else 'NOT met'})"))
        r = (peaks["full", state] - base["imports torch, optuna, kornia"]) / dataset
        print(ratio_line(f"study peak RSS above importing torch+optuna+kornia / cached data set"
                         f", {state} cache", r))
        if "half" in sizes:
            slope = ((peaks["full", state] - peaks["half", state])
                     / (sizes["full"] - sizes["half"]))
            print(ratio_line(f"extra peak RSS per extra byte of data (slope), {state} cache",
                             slope))
    return 0


if __name__ == "__main__":
    sys.exit(main())
