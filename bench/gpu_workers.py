"""GPU use with 1, 2 and 4 workers per GPU: images/s per trial and GPU utilisation.

For each worker count K it runs ``run_study.py --workers K --device cuda`` on one synthetic
set (made here, cached once), with a fixed sampler seed, one input size and a time budget
(``--timeout``: no new trial starts after it), while ``nvidia-smi`` samples the GPU's
utilisation in the background. From the study it reads every finished trial: its epochs and
duration give its images/s (training images over the trial's whole wall time, validation and
recording included), and all trials together the aggregate images/s. Mixed precision (bf16
autocast), cuDNN autotuning, channels-last and the uint8 data resident on the GPU are what
``training.loop`` does on CUDA. The baseline is K=1. ``bench/gpu.sh`` runs this on a lent GPU
machine; with ``--device cpu`` and tiny settings it dry-runs anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench._common import machine, ratio_line, table
from cli.common import HelpFormatter, fail

SMI_QUERY = "timestamp,utilization.gpu,memory.used"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_workers", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--work", default=None,
                   help="folder for the data, cache and studies (kept, so that a rerun skips "
                   "making the data); default: a temporary folder, removed afterwards")
    p.add_argument("--n", type=int, default=1400, help="synthetic erasers (a real set's size)")
    p.add_argument("--source-size", type=int, default=310, help="side of the captures")
    p.add_argument("--size", type=int, default=128, help="input size of every trial")
    p.add_argument("--epochs", type=int, default=8, help="max epochs per trial")
    p.add_argument("--pruner", default="hyperband", choices=["hyperband", "median", "none"],
                   help="the study's pruner")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                   help="worker counts to measure; the first is the baseline")
    p.add_argument("--budget", type=float, default=55.0,
                   help="seconds per worker count during which trials may start")
    p.add_argument("--grace", type=float, default=90.0,
                   help="extra seconds for trials in flight and start-up before a worker "
                   "count is stopped")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, split and sampler")
    p.add_argument("--smi-ms", type=int, default=200, help="nvidia-smi sampling interval")
    p.add_argument("--aug-check", choices=["auto", "on", "off"], default="auto",
                   help="also time data.augment against the plain kornia pipeline and its "
                   "share of a training step on the device (auto: on CUDA only)")
    p.add_argument("--out", default=os.environ.get("OUT") or None,
                   help="folder for gpu_results.md (default: $OUT if set, else none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p


class GpuSampler:
    """``nvidia-smi`` in loop mode in the background: (time, utilisation %, memory MiB)."""

    def __init__(self, interval_ms: int):
        self.samples: list[tuple[dt.datetime, float, float]] = []
        self.proc = None
        exe = shutil.which("nvidia-smi")
        if exe:
            self.proc = subprocess.Popen(
                [exe, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits",
                 f"--loop-ms={interval_ms}", "--id=0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            sample = parse_smi_line(line)
            if sample is not None:
                self.samples.append(sample)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def between(self, start: dt.datetime, end: dt.datetime) -> list[tuple[float, float]]:
        return [(u, m) for t, u, m in self.samples if start <= t <= end]


def parse_smi_line(line: str) -> tuple[dt.datetime, float, float] | None:
    """``2026/11/28 15:30:00.123, 87, 1234`` -> (time, 87.0, 1234.0); None if unreadable.

    A timestamp in another format is replaced by the time of reading (lines arrive live)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3:
        return None
    try:
        util, mem = float(parts[1]), float(parts[2])
    except ValueError:
        return None
    try:
        when = dt.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
    except ValueError:
        when = dt.datetime.now()
    return when, util, mem


def prepare_data(work: Path, args: argparse.Namespace) -> Path:
    """The synthetic set (made once) with its decoded cache at ``args.size`` filled."""
    from data import load_data
    from data.synth import generate

    folder = work / f"erasers_{args.n}_{args.source_size}_{args.seed}"
    if not (folder / "labels_multiclass.csv").exists():
        t0 = time.perf_counter()
        generate(folder, n=args.n, seed=args.seed, size=args.source_size,
                 workers=os.cpu_count(), force=True)
        print(f"made {args.n} synthetic erasers in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    data = load_data(folder, cache_dir=work / "cache")
    sizes = {args.size}
    try:  # the dashboard figures read their own size; fill it too, not in every worker
        from reporting.trial_report import ERROR_IMAGE_SIZE

        sizes.add(min(ERROR_IMAGE_SIZE, data.image_size))
    except ImportError:
        pass
    for s in sorted(sizes):
        data.images(s)
    print(f"cache ready ({sorted(sizes)} px) in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def stray_workers(token: str) -> list[int]:
    """PIDs of processes whose command line holds ``token`` (this run's study name): the
    workers run_study.py starts in their own sessions."""
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if token in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def run_k(k: int, folder: Path, work: Path, args: argparse.Namespace,
          sampler: GpuSampler) -> dict:
    """One study with ``k`` workers under the budget; its trials' throughput and GPU use."""
    import optuna

    name = f"gpu_k{k}_{os.getpid()}_{int(time.time())}"
    db = work / f"{name}.db"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(root / "run_study.py"), "--data", str(folder), "--study", name,
           "--storage", f"sqlite:///{db}", "--artifact-dir", str(work / f"{name}-artifacts"),
           "--cache-dir", str(work / "cache"), "--n-trials", "1000", "--timeout",
           str(args.budget), "--epochs", str(args.epochs), "--sizes", str(args.size),
           "--pruner", args.pruner, "--seed", str(args.seed), "--device", args.device,
           "--workers", str(k)]
    log_path = work / f"{name}.log"
    started = dt.datetime.now()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            proc.wait(timeout=args.budget + args.grace)
        except subprocess.TimeoutExpired:
            print(f"  K={k}: still running after {args.budget + args.grace:.0f} s; stopping "
                  "it (trials in flight are lost)", flush=True)
        finally:  # also on Ctrl-C or a timeout of the whole script: stop it, then its workers
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # run_study passes it on to its workers
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pid in stray_workers(name):  # never leave a worker on the GPU for the next K
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    wall = time.perf_counter() - t0
    ended = dt.datetime.now()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        n_train = int(study.user_attrs.get("split", {}).get("n_train", 0))
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        trials = [t for t in study.get_trials(deepcopy=False, states=states)
                  if t.datetime_start and t.datetime_complete]
    except KeyError:  # run_study.py never created the study; its log says why
        n_train, trials = 0, []
    per_trial, images = [], 0
    for t in trials:
        epochs = len(t.intermediate_values)
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        images += epochs * n_train
        if seconds > 0:
            per_trial.append(epochs * n_train / seconds)
    if trials:
        first = min(t.datetime_start for t in trials)
        last = max(t.datetime_complete for t in trials)
        span = max(1e-9, (last - first).total_seconds())
    else:
        first, last, span = started, ended, wall
    util = sampler.between(first, last)
    # Each worker's first trial also pays its process's one-time CUDA start (context, kernel
    # and library loading): timed apart from the later trials, which show the steady state.
    done = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: t.number)
    artifacts = work / f"{name}-artifacts"
    timing = {"first": trial_timing([t for t in done if t.number < k], storage, artifacts),
              "later": trial_timing([t for t in done if t.number >= k], storage, artifacts)}
    return {"k": k, "trials": len(trials), "timing": timing,
            "epochs": sum(len(t.intermediate_values) for t in trials),
            "per_trial": sum(per_trial) / len(per_trial) if per_trial else 0.0,
            "aggregate": images / span if trials else 0.0, "wall": wall,
            "util": sum(u for u, _ in util) / len(util) if util else float("nan"),
            "mem": max((m for _, m in util), default=float("nan")), "samples": len(util),
            "exit": proc.returncode, "log": log_path}


def trial_timing(trials: list, storage, artifact_dir: Path) -> dict[str, float]:
    """Where a completed trial's wall time goes (medians over ``trials``): the time in
    ``training.loop.train`` outside its epochs (set-up before the first, the per-epoch
    pruning reports, the result at the end), the first epoch (cuDNN autotuning and lazy
    CUDA kernel loading land there), a later epoch, and the time outside training (before
    it: sampling, moving a new input size's data to the device; after it: recording,
    weights, dashboard figures). Epoch times come from each trial's history artifact."""
    import json
    import statistics

    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta

    rows = []
    store = FileSystemArtifactStore(str(artifact_dir)) if artifact_dir.is_dir() else None
    for t in trials:
        inside = t.user_attrs.get("seconds")
        if inside is None or store is None:
            continue
        metas = [m for m in get_all_artifact_meta(t, storage=storage)
                 if m.filename == "history.json"]
        if not metas:
            continue
        with store.open_reader(metas[0].artifact_id) as f:
            epochs = [float(h["seconds"]) for h in json.load(f)]
        if not epochs:
            continue
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({"wall": wall, "setup": inside - sum(epochs), "first": epochs[0],
                     "later": statistics.median(epochs[1:]) if len(epochs) > 1 else math.nan,
                     "epochs": len(epochs), "outside": wall - inside})
    if not rows:
        return {}
    return {"n": len(rows), **{key: statistics.median(r[key] for r in rows) for key in rows[0]}}


def aug_check(folder: Path, work: Path, args: argparse.Namespace) -> list[str]:
    """RATIO lines: data.augment vs plain kornia, and its share of a step, on the device."""
    import torch

    from bench.data_path import augment_ratio, step_share, steps_per_second
    from data import AugmentConfig, Preprocessor, load_data
    from data.pipeline import channel_stats

    data = load_data(folder, cache_dir=work / "cache")
    images = data.images(args.size)[:512]
    mean, std = channel_stats(images, range(6))
    batch = min(64, len(images))
    lines = []
    for g, t in ((0.5, 0.5), (1.0, 1.0)):
        cfg = AugmentConfig.from_strength(g, t)
        r = augment_ratio(images, cfg, batch, 5, device=args.device)
        lines.append(ratio_line(f"augmentation data.augment / plain kornia on {args.device}, "
                                f"strength ({g}, {t})", r, f"(batch {batch}; higher is faster)"))
        s = step_share(images, data.targets[:512], Preprocessor(range(6), mean, std, cfg),
                       args.size, batch, 10, args.seed, device=args.device)
        lines.append(ratio_line(
            f"preprocessing+augmentation / training step on {args.device}, strength ({g}, {t})",
            s["share"], f"({s['pre_ms']:.1f} of {s['step_ms']:.1f} ms per step of {batch}, "
            f"widths 32-256 at {args.size} px)"))
    pre = Preprocessor(range(6), mean, std, AugmentConfig.from_strength(0.5, 0.5))
    rate = {read: steps_per_second(images, data.targets[:512], pre, args.size, batch, 20,
                                   args.seed, args.device, read) for read in (True, False)}
    lines.append(ratio_line(
        f"training steps/s on {args.device}, loss read once per epoch / every step",
        rate[False] / rate[True], f"({rate[False]:.1f} vs {rate[True]:.1f} steps/s; "
        "training.loop reads it once per epoch on CUDA)"))
    torch.manual_seed(args.seed)
    return lines


def write_results(out: str | None, text: str) -> None:
    """``out/gpu_results.md`` (replaced whole, never half-written)."""
    if not out:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "gpu_results.md.tmp"
    part.write_text(f"# GPU workers benchmark\n\n{text}\n")
    os.replace(part, folder / "gpu_results.md")


def report(results: list[dict], args: argparse.Namespace, header: str) -> str:
    base = results[0]
    rows = [[str(r["k"]), str(r["trials"]), str(r["epochs"]), f"{r['per_trial']:.0f}",
             f"{r['aggregate']:.0f}",
             f"{r['aggregate'] / base['aggregate']:.2f}" if base["aggregate"] else "-",
             "n/a" if math.isnan(r["util"]) else f"{r['util']:.0f}",
             "n/a" if math.isnan(r["mem"]) else f"{r['mem']:.0f}", f"{r['wall']:.0f}"]
            for r in results]
    lines = [header, "", table(rows, [
        "workers", "trials", "epochs", "images/s per trial", "images/s all workers",
        f"vs {base['k']} worker(s)", "GPU util %", "GPU mem MiB", "wall s"]), ""]
    rows = []
    for r in results:
        for which, label in (("first", "each worker's first"), ("later", "later")):
            t = r.get("timing", {}).get(which)
            if t:
                rows.append([str(r["k"]), label, str(t["n"]), *(
                    "n/a" if math.isnan(t[key]) else f"{t[key]:.2f}"
                    for key in ("wall", "setup", "first", "later")),
                    f"{t['epochs']:g}", f"{t['outside']:.2f}"])
    if rows:
        lines += ["Where a completed trial's time goes (medians, seconds): the time in "
                  "`training.loop.train` outside its epochs (set-up, pruning reports), the "
                  "first epoch (cuDNN autotuning, lazy kernel loading), a later epoch, and the "
                  "time outside training (a new input size's data to the device; recording, "
                  "weights, figures). A worker's first trial also pays its process's CUDA "
                  "start:", "",
                  table(rows, ["workers", "trials", "completed", "wall", "set-up+reports",
                               "first epoch", "later epoch", "epochs", "outside training"]),
                  ""]
    for r in results[1:]:
        if base["aggregate"] and r["aggregate"]:
            per_trial = r["per_trial"] / max(1e-9, base["per_trial"])
            lines.append(ratio_line(f"images/s, {r['k']} workers / {base['k']}",
                                    r["aggregate"] / base["aggregate"],
                                    f"(per trial {per_trial:.2f}x)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 8 or args.size < 16 or args.epochs < 1 or args.budget <= 0 or min(
            args.workers) < 1:
        return fail("--n must be at least 8, --size at least 16, --epochs and every "
                    "--workers at least 1, --budget positive.")
    header = (f"settings: {args.n} synthetic erasers at {args.source_size} px -> {args.size} "
              f"px, up to {args.epochs} epochs per trial, pruner {args.pruner}, sampler seed "
              f"{args.seed}, {args.budget:.0f} s budget per worker count (+ trials in "
              f"flight), device {args.device}")
    print(f"machine  {machine()}")
    print(f"plan     {header.removeprefix('settings: ')}; workers {args.workers}", flush=True)
    if args.dry_run:
        print("dry run: nothing run.")
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return fail("--device cuda but PyTorch sees no GPU here; use --device cpu for a "
                        "dry run.")

    import tempfile

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="eraser-gpu-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    sampler = GpuSampler(args.smi_ms)
    results: list[dict] = []
    checks: list[str] = []
    try:
        folder = prepare_data(work, args)
        if args.aug_check == "on" or (args.aug_check == "auto"
                                      and args.device.startswith("cuda")):
            checks = aug_check(folder, work, args)
            print("\n".join(checks), flush=True)
        for k in args.workers:
            r = run_k(k, folder, work, args, sampler)
            util = "n/a" if math.isnan(r["util"]) else f"{r['util']:.0f} %"
            print(f"  K={k}: {r['trials']} trials, {r['aggregate']:.0f} images/s in all, "
                  f"GPU util {util} (exit {r['exit']}, {r['wall']:.0f} s)", flush=True)
            if r["trials"] == 0:
                print(f"  K={k}: no trial finished; the end of its log:\n"
                      f"{r['log'].read_text()[-2000:]}", flush=True)
            results.append(r)
            # what is measured so far survives a timeout of the whole script
            write_results(args.out, "\n".join([f"machine: {machine()}", *checks,
                                               report(results, args, header)]))
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} worker count(s); what was measured is "
              f"{'in ' + str(Path(args.out) / 'gpu_results.md') if args.out else 'above'}",
              file=sys.stderr)
        return 130
    finally:
        sampler.stop()
        if tmp is not None:
            tmp.cleanup()
    text = "\n".join([f"machine: {machine()}", *checks, report(results, args, header)])
    print()
    print(text)
    if args.out:
        write_results(args.out, text)
        print(f"\nwrote {Path(args.out) / 'gpu_results.md'}")
    return 0 if all(r["trials"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
