"""Time to quality: what a budget buys, scored on held-out erasers with clean labels.

    python -m bench.time_to_quality --budgets 10m 30m --device cpu [--write]

Makes a training delivery of 900 synthetic erasers (5 % of the defective ones labelled good)
and a separate test delivery of 450 with clean labels, from seeds that no test and no
portfolio search used. For each budget it runs ``run_study.py --budget B`` as a user would
(a subprocess: planning, portfolio, search, all inside the budget), exports the best trial
with ``export_best.py`` and scores it on the test delivery. From the study's trials it also
reads the best test score reached against wall time: at each mark (5, 10, 20, 30 min) the
trial with the best validation score among those finished by then, scored on the test set
at its own thresholds. The same marks for a plain fixed CNN trained for the longest budget
(the hand-made baseline: six channels at 96 px, 4 blocks of 2 convs 32-256, AdamW 1e-3,
flips, rotations and affine warps, 40 epochs, no search). ``--write`` adds the tables to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

import model as model_lib
from bench._common import machine, table
from cli.common import HelpFormatter, fail
from data import AugmentConfig, EraserSet, load_data, make_split
from data.pipeline import TrainData
from data.synth import generate
from model import CNNConfig, InspectionModel, build_model, choose_thresholds
from model.ensemble import summary
from search.export import fetch_checkpoint
from search.plan import parse_budget
from training.config import RunConfig, TrainConfig
from training.loop import StopTraining, train
from training.scoring import predict_set

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SEEDS = {"train": 9001, "test": 9002}  # not used by any test, portfolio search or demo
KEYS = ("graded_ap", "defect_ap", "defect_f1", "graded_f1", "print_error_ap", "no_defect_ap",
        "physical_error_ap", "print_error_auroc", "physical_error_auroc")
SHOWN = {"graded_ap": "graded AP", "defect_ap": "defect AP", "defect_f1": "defect F1",
         "print_error_ap": "print AP", "physical_error_ap": "phys. AP",
         "print_error_auroc": "print AUROC", "physical_error_auroc": "phys. AUROC"}
# The hand-made CNN of the issue that reported a search losing to no search at all.
BASELINE = RunConfig(
    model=CNNConfig(input_size=96, widths=(32, 64, 128, 256), kernel_sizes=(3,) * 4),
    train=TrainConfig(epochs=40, batch_size=32, lr=1e-3, early_stop_patience=0),
    augment=AugmentConfig.from_strength(0.5, 0.0))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.time_to_quality", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--budgets", nargs="+", default=["10m", "30m"], help="run_study.py budgets")
    p.add_argument("--device", default="cpu", help="device for the studies and the baseline")
    p.add_argument("--n-train", type=int, default=900, help="training erasers")
    p.add_argument("--n-test", type=int, default=450, help="held-out test erasers")
    p.add_argument("--size", type=int, default=310, help="side of the synthetic captures")
    p.add_argument("--noise", type=float, default=0.05,
                   help="share of the defective training erasers labelled good")
    p.add_argument("--marks", type=float, nargs="+", default=[5, 10, 20, 30],
                   help="minutes at which the best test score so far is read")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the fixed CNN for the longest budget")
    p.add_argument("--work", required=True, help="folder for data, studies and exports "
                   "(reused: the data are made once)")
    p.add_argument("--write", action="store_true", help="append the tables to RESULTS.md")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p


def make_sets(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    out = {}
    for part, n, noise in (("train", args.n_train, args.noise), ("test", args.n_test, 0.0)):
        folder = work / part
        if not (folder / "labels_multiclass.csv").exists():
            generate(folder, n=n, seed=SEEDS[part], size=args.size, noise=noise,
                     workers=min(8, os.cpu_count() or 1), force=True)
        out[part] = folder
    return out["train"], out["test"]


def test_scores(net: InspectionModel, test: EraserSet) -> dict[str, float]:
    """``net``'s metrics on the test delivery (clean labels) at its own thresholds."""
    metrics = model_lib.evaluate(predict_set(net, test), test.targets, thresholds=net.thresholds)
    return {k: metrics.get(k, math.nan) for k in KEYS}


def run_budget(budget: str, train_dir: Path, test: EraserSet, work: Path,
               args: argparse.Namespace, name: str | None = None,
               extra: Sequence[str] = ()) -> dict:
    """One ``run_study.py --budget`` as a user runs it, its export, and its time curve.
    ``name``: the study (default ``tq_<budget>``); ``extra``: more run_study.py arguments."""
    name = name or f"tq_{budget}"
    url = f"sqlite:///{work / 'studies.db'}"
    cmd = [sys.executable, str(ROOT / "run_study.py"), "--data", str(train_dir), "--study",
           name, "--storage", url, "--budget", budget, "--device", args.device,
           "--cache-dir", str(work / "cache"), *extra]
    log = work / f"{name}.log"
    t0 = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"run_study.py exited {code}; see {log}")
    plan = [line.removeprefix("plan    ") for line in log.read_text().splitlines()
            if line.startswith("plan    ") and "timing" not in line]
    subprocess.run([sys.executable, str(ROOT / "export_best.py"), "--study", name, "--group",
                    name, "--storage", url, "--out", str(work / "exports"), "--cache-dir",
                    str(work / "cache")], cwd=work, check=True, stdout=subprocess.DEVNULL)
    exported = model_lib.load(work / "exports" / f"{name}.pth")
    study = optuna.load_study(study_name=name, storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # portfolio trials still queued when the budget ran out never started
    start = min(t.datetime_start for t in study.trials if t.datetime_start)
    curve = {}
    for mark in args.marks:
        done = [t for t in complete if t.datetime_complete - start <= dt.timedelta(minutes=mark)]
        if done and mark * 60 <= wall + 60:
            best = max(done, key=lambda t: t.value)
            net = model_lib.model_from_checkpoint(
                fetch_checkpoint(best, work / "artifacts"), f"trial {best.number}")
            curve[mark] = test_scores(net, test)
    states = [t.state.name for t in study.trials]
    return {"budget": budget, "wall": wall, "complete": len(complete),
            "pruned": states.count("PRUNED"), "val": exported.meta.get("val_metrics", {}),
            "test": test_scores(exported, test), "curve": curve, "plan": plan,
            "architecture": summary(exported)}


def run_baseline(minutes: float, train_dir: Path, test: EraserSet, work: Path,
                 args: argparse.Namespace) -> dict:
    """The fixed CNN for ``minutes`` of wall time; at each mark its best-validation weights
    so far, at thresholds chosen on validation (max F1, as the product does), on the test
    delivery."""
    start = time.monotonic()
    data = load_data(train_dir, cache_dir=work / "cache")
    split = make_split(data.ids, data.codes, k=5, seed=0)
    td = TrainData.from_split(data, split, BASELINE.model.input_size, device=args.device)
    marks, snapshots = sorted(args.marks), {}

    def at_epoch(r) -> None:
        elapsed = (time.monotonic() - start) / 60
        while marks and elapsed >= marks[0]:
            snapshots[marks.pop(0)] = r.best_state
        if elapsed >= minutes:
            raise StopTraining("the baseline's wall time ran out")

    result = train(BASELINE, td, device=args.device, callback=at_epoch)
    for mark in marks:  # done with its 40 epochs before these marks: its final model stands
        if mark <= minutes:
            snapshots[mark] = result.state_dict
    val_rows = [data.ids.index(k) for k in result.val_ids]
    curve = {}
    for mark, state in sorted(snapshots.items()):
        net = build_model(BASELINE.model)
        net.load_state_dict(state)
        model = InspectionModel(net, BASELINE.model, result.mean, result.std)
        model.thresholds = choose_thresholds(predict_set(model, data, result.val_ids),
                                             data.targets[val_rows])
        curve[mark] = test_scores(model, test)
    return {"curve": curve, "epochs_run": result.epochs_run,
            "minutes": (time.monotonic() - start) / 60}


def report(runs: list[dict], baseline: dict | None, args: argparse.Namespace) -> str:
    keys = list(SHOWN)
    rows = []
    for r in runs:
        rows.append([f"search {r['budget']}: exported", f"{r['wall'] / 60:.1f}",
                     *(f"{r['test'][k]:.3f}" for k in keys),
                     f"{r['val'].get('graded_ap', math.nan):.3f}"])
        rows += [[f"search {r['budget']}: best by {m:g} min", f"{m:g}",
                  *(f"{c[k]:.3f}" for k in keys), ""] for m, c in sorted(r["curve"].items())]
    if baseline:
        rows += [[f"fixed CNN: best by {m:g} min", f"{m:g}", *(f"{c[k]:.3f}" for k in keys),
                  ""] for m, c in sorted(baseline["curve"].items())]
    lines = [f"Machine: {machine()}.", "",
             f"Training delivery: {args.n_train} synthetic erasers (seed {SEEDS['train']}, "
             f"{args.noise:.0%} of the defective labelled good); test delivery: {args.n_test} "
             f"(seed {SEEDS['test']}, clean labels), never seen by the study. Test scores at "
             "each model's own thresholds; 'val graded AP' is the exported trial's validation "
             "score (the drop to the test column is the selection bias).", "",
             table(rows, ["run", "minutes", *SHOWN.values(), "val graded AP"]), ""]
    for r in runs:
        lines += [f"Search {r['budget']}: {r['complete']} trials completed, {r['pruned']} "
                  f"pruned; exported `{r['architecture']}`. Plan:", ""]
        lines += [f"- {p}" for p in r["plan"]] + [""]
    if baseline:
        lines += [f"Fixed CNN: `{model_lib.describe(BASELINE.model)}`, {baseline['epochs_run']} "
                  f"epochs in {baseline['minutes']:.1f} min.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        minutes = [parse_budget(b) / 60 for b in args.budgets]
    except ValueError as exc:
        return fail(str(exc))
    print(f"machine  {machine()}")
    print(f"plan     train {args.n_train} erasers (noise {args.noise}), test {args.n_test} "
          f"(clean), budgets {', '.join(args.budgets)} on {args.device}"
          + (f", then the fixed CNN for {max(minutes):.0f} min" if args.baseline else ""))
    if args.dry_run:
        print("dry run: nothing run.")
        return 0
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = make_sets(work, args)
    test = load_data(test_dir, cache_dir=work / "cache")
    runs = []
    for budget in args.budgets:
        print(f"search   {budget} ...", flush=True)
        runs.append(run_budget(budget, train_dir, test, work, args))
        print(f"         test graded AP {runs[-1]['test']['graded_ap']:.3f}", flush=True)
    baseline = None
    if args.baseline:
        print(f"baseline {max(minutes):.0f} min ...", flush=True)
        baseline = run_baseline(max(minutes), train_dir, test, work, args)
    text = report(runs, baseline, args)
    print(text)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n## Time to quality ({dt.date.today().isoformat()})\n\n{text}")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
