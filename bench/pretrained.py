"""Pretrained backbones against the scratch CNN, at one wall-time budget, on held-out erasers.

    python -m bench.pretrained --work DIR --weights DIR [--budget 10m]
        [--arms scratch frozen finetune] [--write]

The same held-out benchmark as ``bench.time_to_quality`` (900 noisy training erasers, seed
9001; 450 clean test erasers, seed 9002; made once in ``--work``). Each arm is one
``run_study.py --budget B`` run as a user runs it, one family of networks per arm, then
``export_best.py`` and the export scored on the test delivery at its own thresholds:

- ``scratch``: CNNs from scratch only (``--families scratch``);
- ``frozen``: tf_efficientnet_lite0 with its ImageNet weights frozen, only the head trains
  (``--families frozen --backbones tf_efficientnet_lite0 --weights W``);
- ``finetune``: the same backbone fine-tuned (``--families finetune ...``);
- ``all``: the three families in one study (optional).

The arms run one after the other. From the frozen arm's study it also scores, per value of
``backbone_pool`` (avg: globally pooled features; max / avgmax: the strongest local position),
the completed trial with the best validation score on the test set, to see whether local
features catch small print defects better; then, all else equal, the study's best
configuration re-trained with each pooling (same split and features, 3 seeds). ``--write``
puts the tables into bench/RESULTS.md, after the "Time to quality" section. Get the weights
offline with ``python -m bench.lite0_weights --out W/tf_efficientnet_lite0.pth``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna

import model as model_lib
from bench._common import machine, table
from bench.time_to_quality import RESULTS, SEEDS, make_sets, run_budget, test_scores
from cli.common import HelpFormatter, fail
from data import load_data
from model.config import BACKBONE_POOLS
from search.export import fetch_checkpoint
from search.plan import parse_budget

BACKBONE = "tf_efficientnet_lite0"
ARMS = ("scratch", "frozen", "finetune", "all")
ARM_NAMES = {"scratch": "A. scratch CNNs", "frozen": "B. lite0 frozen",
             "finetune": "C. lite0 fine-tuned", "all": "D. all three families"}
TITLE = "## Pretrained backbones (bench/pretrained.py)"
AFTER = "## Time to quality"
SHOWN = {"graded_ap": "graded AP", "defect_ap": "defect AP", "defect_f1": "defect F1",
         "print_error_ap": "print AP", "physical_error_ap": "phys. AP",
         "print_error_auroc": "print AUROC", "physical_error_auroc": "phys. AUROC"}
POOL_SHOWN = ("graded_ap", "print_error_ap", "print_error_auroc", "physical_error_ap",
              "physical_error_auroc")
FEATURES_LINE = re.compile(r"features of (\S+) at (\d+) px for (\d+) erasers x (\d+) views "
                           r"in ([\d.]+) s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pretrained", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--work", required=True, help="folder for data, studies and exports "
                   "(shared with bench.time_to_quality: the data are made once)")
    p.add_argument("--weights", default=None,
                   help=f"ImageNet weights: {BACKBONE}.pth or a folder holding it (needed by "
                   "every arm but scratch)")
    p.add_argument("--budget", default="10m", help="run_study.py budget of each arm")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]),
                   help="arms to run, in this order")
    p.add_argument("--device", default="cpu", help="device of the studies")
    p.add_argument("--n-train", type=int, default=900, help="training erasers")
    p.add_argument("--n-test", type=int, default=450, help="held-out test erasers")
    p.add_argument("--size", type=int, default=310, help="side of the synthetic captures")
    p.add_argument("--noise", type=float, default=0.05,
                   help="share of the defective training erasers labelled good")
    p.add_argument("--reuse", action="store_true",
                   help="report the arms' saved results (DIR/pt_<arm>_<budget>.json) "
                   "instead of running them again")
    p.add_argument("--write", action="store_true", help="put the tables into RESULTS.md")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p


def study_name(arm: str, budget: str) -> str:
    return f"pt_{arm}_{budget}"


def arm_arguments(arm: str, weights: str | None) -> list[str]:
    """The run_study.py arguments of ``arm`` beyond data, study, budget and device."""
    pretrained = ["--backbones", BACKBONE, "--weights", str(weights)]
    families = {"scratch": ["--families", "scratch"],
                "frozen": ["--families", "frozen", *pretrained],
                "finetune": ["--families", "finetune", *pretrained],
                "all": pretrained}[arm]
    return [*families, "-v"]  # -v: the logs say how long the frozen features took


def family(trial: optuna.trial.FrozenTrial) -> str:
    backbone = trial.params.get("backbone", "scratch")
    return "scratch" if backbone == "scratch" else trial.params.get("backbone_mode", "?")


def study_facts(name: str, url: str, log: Path) -> dict:
    """Per family: trials by state and mean trial seconds; the feature extractions logged."""
    study = optuna.load_study(study_name=name, storage=url)
    states: dict[str, Counter] = {}
    seconds: dict[str, list[float]] = {}
    for t in study.trials:
        fam = family(t)
        states.setdefault(fam, Counter())[t.state.name] += 1
        if t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED"):
            seconds.setdefault(fam, []).append(
                (t.datetime_complete - t.datetime_start).total_seconds())
    features = [{"size": int(m[2]), "erasers": int(m[3]), "views": int(m[4]),
                 "seconds": float(m[5])}
                for m in FEATURES_LINE.finditer(log.read_text())] if log.exists() else []
    return {"states": {f: dict(c) for f, c in states.items()},
            "trial_seconds": {f: sum(s) / len(s) for f, s in seconds.items() if s},
            "features": features}


def pooling(name: str, url: str, work: Path, test) -> list[dict]:
    """Per ``backbone_pool`` value: its trials, and its best-validation completed trial's
    test scores."""
    study = optuna.load_study(study_name=name, storage=url)
    out = []
    for pool in BACKBONE_POOLS:
        trials = [t for t in study.trials if t.params.get("backbone_pool") == pool]
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        row = {"pool": pool, "trials": len(trials), "complete": len(done)}
        if done:
            best = max(done, key=lambda t: t.value)
            net = model_lib.model_from_checkpoint(
                fetch_checkpoint(best, work / "artifacts"), f"trial {best.number}")
            row |= {"trial": best.number, "val": best.value, "test": test_scores(net, test),
                    "architecture": model_lib.describe(net.cfg)}
        out.append(row)
    return out


def controlled_pooling(name: str, url: str, work: Path, test, weights: str | None,
                       seeds: int = 3) -> dict:
    """The study's best frozen configuration re-trained with each ``backbone_pool`` (all else
    equal: same features, same split), ``seeds`` seeds each, scored on the test delivery."""
    from dataclasses import replace

    from data.pipeline import TrainData
    from model.pretrained import WeightFinder
    from search.export import study_data
    from search.space import trial_config
    from training.features import FeatureCache
    from training.loop import train

    study = optuna.load_study(study_name=name, storage=url)
    best = study.best_trial
    config = trial_config(best, study.user_attrs.get("space", {}))
    data, split = study_data(study, cache_dir=work / "cache")
    td = TrainData.from_split(data, split, config.model.input_size, device="cpu")
    finder, cache = WeightFinder(weights), FeatureCache()
    rows = []
    for pool in BACKBONE_POOLS:
        runs = []
        for k in range(seeds):
            run = replace(config, model=replace(config.model, head_pool=pool),
                          train=replace(config.train, seed=config.train.seed + 1000 * k))
            result = train(run, td, device="cpu", weights=finder, features=cache)
            net = model_lib.model_from_checkpoint(result.checkpoint(), f"{pool} seed {k}")
            runs.append({"val": result.score, "test": test_scores(net, test)})
        rows.append({"pool": pool, "runs": runs})
    return {"trial": best.number, "architecture": model_lib.describe(config.model),
            "seeds": seeds, "rows": rows}


def run_arm(arm: str, train_dir: Path, test, work: Path, args: argparse.Namespace) -> dict:
    name = study_name(arm, args.budget)
    url = f"sqlite:///{work / 'studies.db'}"
    if name in optuna.get_all_study_names(storage=url):
        optuna.delete_study(study_name=name, storage=url)
    for old in (work / "exports").glob(f"{name}.*"):  # export_best.py keeps earlier exports
        old.unlink()
    ns = argparse.Namespace(device=args.device, marks=[])
    r = run_budget(args.budget, train_dir, test, work, ns, name=name,
                   extra=arm_arguments(arm, args.weights))
    r |= {"arm": arm, "study": name,
          **study_facts(name, url, work / f"{name}.log")}
    r.pop("curve", None)
    saved = work / f"{name}.json"
    saved.write_text(json.dumps(r, indent=1))
    if arm == "frozen":
        r["pooling"] = pooling(name, url, work, test)
        saved.write_text(json.dumps(r, indent=1))
        r["controlled"] = controlled_pooling(name, url, work, test, args.weights)
        saved.write_text(json.dumps(r, indent=1))
    return r


def _cores() -> str:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return ""
    total = os.cpu_count() or n
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"Pinned to {n} of the {total} cores" + (f", OMP_NUM_THREADS={threads}"
                                                     if threads else "") + "."
            if n < total else "")


def _wrap(lines: list[str]) -> list[str]:
    """Prose and bullets wrapped at 95 columns (tables and blank lines as they are)."""
    out = []
    for line in lines:
        if not line or line.startswith("|") or "\n" in line:
            out.append(line)
        else:
            lead = "  " if line.startswith(("- ", "  ")) else ""
            out.append(textwrap.fill(line.strip() if lead and line.startswith("  ") else line,
                                     width=95, initial_indent=lead if line.startswith("  ")
                                     else "", subsequent_indent=lead))
    return out


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _f(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def report(runs: list[dict], args: argparse.Namespace) -> str:
    rows = [[ARM_NAMES[r["arm"]], f"{r['wall'] / 60:.1f}", f"{r['complete']}/{r['pruned']}",
             _f(r["val"].get("graded_ap")), *(_f(r["test"][k]) for k in SHOWN)] for r in runs]
    lines = [f"Machine: {machine()}.", "",
             f"`python -m bench.pretrained --work DIR --weights DIR --budget {args.budget} "
             f"--arms {' '.join(r['arm'] for r in runs)}`: the benchmark of \"Time to quality\" "
             f"({args.n_train} training erasers, seed {SEEDS['train']}, {args.noise:.0%} of the "
             f"defective labelled good; {args.n_test} test erasers, seed {SEEDS['test']}, clean "
             f"labels, never seen by a study). Each arm: `run_study.py --budget {args.budget} "
             f"--device {args.device}` with its families, `export_best.py`, the export scored "
             "on the test delivery at its own thresholds. Pretrained: "
             f"`{BACKBONE}` with real ImageNet weights (`bench/lite0_weights.py`). "
             "'val graded AP': the exported trial's validation score. "
             f"{_cores()}", "",
             table(rows, ["arm", "minutes", "complete/pruned", "val graded AP",
                          *SHOWN.values()]), ""]
    for r in runs:
        fams = ", ".join(
            f"{f} {sum(c.values())} ({', '.join(f'{n} {s.lower()}' for s, n in c.items())}; "
            f"{r['trial_seconds'].get(f, math.nan):.0f} s per trial)"
            for f, c in r["states"].items())
        lines.append(f"- {ARM_NAMES[r['arm']]}: exported `{r['architecture']}`; trials: {fams}.")
        if r["features"]:
            groups: dict[tuple[int, int], list[float]] = {}
            for x in r["features"]:
                groups.setdefault((x["size"], x["views"]), []).append(x["seconds"])
            feats = "; ".join(f"{size} px x {views} view(s): {_times(len(s))}, "
                              + (f"{s[0]:.0f} s" if len(s) == 1 else
                                 f"{min(s):.0f} s each" if f"{min(s):.0f}" == f"{max(s):.0f}"
                                 else f"{min(s):.0f}-{max(s):.0f} s each")
                              for (size, views), s in sorted(groups.items()))
            lines.append(f"  Frozen features ({r['features'][0]['erasers']} training erasers "
                         f"and the validation ones) computed {_times(len(r['features']))}, "
                         f"{sum(x['seconds'] for x in r['features']) / 60:.1f} min in all: "
                         f"{feats}.")
    pool = next((r["pooling"] for r in runs if r.get("pooling")), None)
    if pool:
        lines += ["", "Frozen arm, per head pooling (`backbone_pool`; avg: globally pooled "
                  "features, max / avgmax: the strongest local position): its best completed "
                  "trial by validation, scored on the test delivery.", ""]
        rows = [[p["pool"], f"{p['complete']}/{p['trials']}", str(p.get("trial", "-")),
                 _f(p.get("val")), *(_f(p["test"][k]) if "test" in p else "-"
                                     for k in POOL_SHOWN)] for p in pool]
        lines.append(table(rows, ["pool", "complete/trials", "best trial", "val graded AP",
                                  *(SHOWN.get(k, "graded AP") for k in POOL_SHOWN)]))
    ctl = next((r["controlled"] for r in runs if r.get("controlled")), None)
    if ctl:
        lines += ["", f"The same frozen arm, all else equal: its best configuration (trial "
                  f"{ctl['trial']}, `{ctl['architecture']}`) re-trained with each pooling on the "
                  f"study's split and features, {ctl['seeds']} seeds each; mean over the seeds "
                  "(min-max of test graded AP).", ""]
        rows = []
        for row in ctl["rows"]:
            tests = [x["test"] for x in row["runs"]]
            graded = [t["graded_ap"] for t in tests]
            rows.append([row["pool"], _f(sum(x["val"] for x in row["runs"]) / len(tests)),
                         *(_f(sum(t[k] for t in tests) / len(tests)) for k in POOL_SHOWN),
                         f"{min(graded):.3f}-{max(graded):.3f}"])
        lines.append(table(rows, ["pool", "val graded AP",
                                  *(SHOWN.get(k, "graded AP") for k in POOL_SHOWN),
                                  "graded AP range"]))
    return "\n".join(_wrap(lines)) + "\n"


def write_section(text: str) -> None:
    """Put the section after the "Time to quality" one (replacing an earlier one)."""
    doc = RESULTS.read_text()
    section = f"{TITLE}\n\n{text}"
    start = doc.find(TITLE + "\n")
    if start >= 0:  # replace the earlier run's section
        end = doc.find("\n## ", start + len(TITLE))
        doc = doc[:start] + section + (doc[end + 1:] if end >= 0 else "")
    else:
        anchor = doc.find(AFTER)
        end = doc.find("\n## ", anchor + len(AFTER)) if anchor >= 0 else -1
        doc = (doc[:end + 1] + section + "\n" + doc[end + 1:] if end >= 0
               else doc.rstrip("\n") + "\n\n" + section)
    RESULTS.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        minutes = parse_budget(args.budget) / 60
    except ValueError as exc:
        return fail(str(exc))
    if any(a != "scratch" for a in args.arms) and not args.weights and not args.reuse:
        return fail(f"--weights is needed for the pretrained arms: a folder holding "
                    f"{BACKBONE}.pth (python -m bench.lite0_weights --out it) or the file")
    print(f"machine  {machine()}")
    print(f"plan     train {args.n_train} erasers (noise {args.noise}), test {args.n_test} "
          f"(clean); arms {', '.join(args.arms)} one after the other, {minutes:g} min each on "
          f"{args.device}: about {len(args.arms) * (minutes + 1):.0f} min")
    for arm in args.arms:
        print(f"         {study_name(arm, args.budget)}: run_study.py "
              f"{' '.join(arm_arguments(arm, args.weights))}")
    if args.dry_run:
        print("dry run: nothing run.")
        return 0
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = make_sets(work, args)
    test = load_data(test_dir, cache_dir=work / "cache")
    runs = []
    for arm in args.arms:
        saved = work / f"{study_name(arm, args.budget)}.json"
        if args.reuse:
            if not saved.exists():
                return fail(f"--reuse: no saved results {saved}; run the arm first")
            runs.append(json.loads(saved.read_text()))
            if arm == "frozen" and "controlled" not in runs[-1]:  # saved by an older version
                url = f"sqlite:///{work / 'studies.db'}"
                runs[-1]["controlled"] = controlled_pooling(runs[-1]["study"], url, work,
                                                            test, args.weights)
                saved.write_text(json.dumps(runs[-1], indent=1))
            continue
        print(f"arm      {arm} ...", flush=True)
        t0 = time.monotonic()
        runs.append(run_arm(arm, train_dir, test, work, args))
        print(f"         test graded AP {runs[-1]['test']['graded_ap']:.3f}, defect F1 "
              f"{runs[-1]['test']['defect_f1']:.3f} ({(time.monotonic() - t0) / 60:.1f} min)",
              flush=True)
    text = report(runs, args)
    print(text)
    if args.write:
        write_section(text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
