"""Launch or resume a hyperparameter search for an eraser-inspection CNN, within a budget.

With no arguments it runs the demo: synthetic MILAN-format data (made once in demo_data/),
study "demo" in studies.db, a 4-minute search that ends by scoring its best model on a test
split it never used. With --data it searches your data for --budget (default: 30 minutes on a
CPU, 2 hours on a GPU): the study times its networks here and chooses a search space the
budget can hold, starts from proven configurations, and stops when the budget is spent.
Rerunning the command resumes the study for another budget. Watch it live with the
optuna-dashboard command it prints, or let --dashboard serve it while the study runs.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

import optuna
import torch

from cli.checks import (
    EPOCHS,
    INPUT_SIZE,
    PORT,
    POSITIVE,
    RECALL,
    SEED,
    TEST_FRACTION,
    VAL_FRACTION,
    at_least,
    bad_number,
    folder_problem,
    names_problem,
    study_name_problem,
)
from cli.common import HelpFormatter, add_study_location, fail, progress_bar, setup_logging
from cli.study import (
    artifact_dir_problem,
    choose_families,
    ensure_demo_data,
    print_session,
    print_summary,
    print_test_score,
    run_in_process,
    run_worker,
    run_workers,
    serve_dashboard,
)
from data import DataError, SplitError, format_problems
from data.cache import default_cache_dir
from data.noise import NoiseError, read_flagged
from model.config import BACKBONES
from model.pretrained import WEIGHTS_ENV, WeightFinder, WeightsError
from reporting import dashboard as dashboard_lib
from search.estimate import EstimateError
from search.export import best_test_metrics
from search.plan import DEFAULT_BUDGETS, DEMO_BUDGET, TIER_NAMES, parse_budget, planner
from search.session import prepare
from search.space import BACKBONE_MODES, SCRATCH, SearchSpace
from search.study import (
    PRUNERS,
    SAMPLERS,
    RepeatedFailure,
    StudyError,
    n_finished,
    storage_url,
)
from training.device import DeviceError, threads_per_worker, worker_device

DEMO_DIR = Path("demo_data")
# A quarter of the demo's defects are subtle (half in the default synthetic set), and a fifth
# of its erasers form the test split that the run ends by scoring. 800 erasers, not 500: with
# 128 validation erasers the best trial is chosen on less noise, and at the same compute its
# test physical AUROC rose from 0.81 to 0.88 (bench/RESULTS.md, "The demo").
DEMO = {"n": 800, "seed": 1, "subtle_rate": 0.25, "test_fraction": 0.2}
RESUMED_TRIALS = 50  # a resumed study without a stored plan runs up to this many more
FAMILIES = (SCRATCH, *BACKBONE_MODES)
CPU_FAMILIES = (SCRATCH, "frozen", "patch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of .npy/PNG files, arrays.zip or images.zip (with "
                   "the label CSVs next to them); default: the synthetic demo set")
    g.add_argument("--labels", nargs="+", metavar="CSV",
                   help="label CSV(s); default: the CSVs found next to the images")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of erasers held out for validation (stratified on X_Y)")
    g.add_argument("--test-fraction", type=float, default=None, help="share set aside "
                   "before the split for an unbiased test score (default: 0.15 from 500 "
                   "erasers, else none; 0.2 for the demo)")
    g.add_argument("--group-regex", default=None,
                   help="keep erasers whose ids share this regex's first group (a pack) on "
                   "one side of every split, e.g. '^(P\\d+)_'")
    g.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (reused by later runs)")
    g = p.add_argument_group("study")
    g.add_argument("--study", help="study name (default: demo, or the data folder's name)")
    add_study_location(g)
    g.add_argument("--budget", help="wall time for this run, e.g. 30m, 2h, 1h30m or seconds "
                   f"(default: {DEMO_BUDGET // 60} min demo, "
                   + ", ".join(f"{v // 60} min {k}" for k, v in DEFAULT_BUDGETS.items()) + ")")
    g.add_argument("--n-trials", type=int, help="finished trials the study should hold in "
                   "total (default: what the budget holds, as planned)")
    g.add_argument("--timeout", type=float, help="also stop starting trials after this many "
                   "seconds")
    g.add_argument("--rung", choices=TIER_NAMES, help="search-space rung instead of the one "
                   "the budget chooses (xs: 64 px, narrow ... xl: 160-224 px, wide)")
    g.add_argument("--epochs", type=int, help="max epochs per trial (default: the rung's)")
    g.add_argument("--sizes", type=int, nargs="+", help="input sizes to search (default: the "
                   "rung's)")
    g.add_argument("--backbones", nargs="+", metavar="NAME",
                   help="pretrained timm backbones searched beside the scratch CNN, frozen or "
                   "fine-tuned, where their ImageNet weights are here or can be downloaded; "
                   f"'none' for the scratch CNN alone (default: {' '.join(BACKBONES)}; the "
                   "demo: none)")
    g.add_argument("--families", nargs="+", choices=FAMILIES,
                   help="network families to search: CNNs from scratch, pretrained backbones "
                   "frozen (only the head trains, on features computed once), fine-tuned, or "
                   "patch (their intermediate stages scored patch by patch at 224-320 px, "
                   "with a memory bank of good erasers' patches) (default: all four on a GPU; "
                   "scratch frozen patch on a CPU, where a fine-tuned trial takes minutes: "
                   "bench/RESULTS.md, 'Pretrained backbones')")
    g.add_argument("--weights", metavar="PATH", help="ImageNet weights: a file named after its "
                   f"backbone (resnet18.safetensors) or a folder of them (default: ${WEIGHTS_ENV}"
                   ", then timm's download cache)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search strategy")
    g.add_argument("--pruner", choices=PRUNERS, default="hyperband",
                   help="stops hopeless trials early")
    g.add_argument("--portfolio", action=argparse.BooleanOptionalAction, default=True,
                   help="start a new study from proven configurations (search/portfolio.json)")
    g.add_argument("--metric", choices=("graded_ap", "defect_ap", "graded_f1"),
                   default="graded_ap", help="validation metric to maximise (graded_ap: mean "
                   "AUC-PR over print error, physical error, no defect)")
    g.add_argument("--min-recall", type=float, help="choose decision thresholds with at least "
                   "this validation recall (default: max F1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split, sampler, training")
    g.add_argument("--flagged", metavar="CSV", help="suspected mislabels (label_issues.csv "
                   "from `python label_issues.py`): the search also tunes their loss weight")
    g = p.add_argument_group("dashboard")
    g.add_argument("--dashboard", action="store_true",
                   help="serve optuna-dashboard on this study while it runs and print its URL")
    g.add_argument("--dashboard-port", type=int, default=dashboard_lib.DEFAULT_PORT,
                   help="its port")
    g.add_argument("--dashboard-host", default=dashboard_lib.DEFAULT_HOST, help="its address; "
                   "anything but loopback exposes it (it has no authentication)")
    g.add_argument("--keep-dashboard", action="store_true",
                   help="keep serving after the study ends, until Ctrl-C (implies --dashboard)")
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    g.add_argument("--workers", type=int, default=1, help="worker processes sharing the study "
                   "(round-robin over the GPUs; --device cuda:N puts them all on GPU N)")
    g.add_argument("--heartbeat", type=int, default=30, help="seconds between a running "
                   "trial's heartbeats; a trial silent for 4x this is failed and retried")
    g.add_argument("--trial-figures", action=argparse.BooleanOptionalAction, default=True,
                   help="draw each finished trial's figures for the dashboard (about a second "
                   "per trial on a CPU)")
    g.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="time the rungs' networks here to plan the budget (a few seconds); "
                   "without, the device's default rung")
    g.add_argument("--dry-run", action="store_true", help="validate data, split and storage, "
                   "print the plan; train nothing and write nothing to the storage")
    g.add_argument("-v", "--verbose", action="store_true", help="log more")
    g.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    return p


def check_flags(args: argparse.Namespace, url: str) -> str | None:
    """Every numeric flag in its range and every output folder writable, before anything is
    loaded or written (a bad value must never reach a stored study)."""
    return bad_number([
        ("--n-trials", args.n_trials, at_least(1)), ("--workers", args.workers, at_least(1)),
        ("--heartbeat", args.heartbeat, at_least(1)), ("--epochs", args.epochs, EPOCHS),
        ("--sizes", args.sizes, INPUT_SIZE), ("--timeout", args.timeout, POSITIVE),
        ("--min-recall", args.min_recall, RECALL),
        ("--val-fraction", args.val_fraction, VAL_FRACTION),
        ("--test-fraction", args.test_fraction, TEST_FRACTION),
        ("--dashboard-port", args.dashboard_port, PORT), ("--seed", args.seed, SEED),
        ("--worker-index", args.worker_index, at_least(0)),
    ]) or study_name_problem(args.study) or names_problem(
        args.backbones, BACKBONES, "--backbones", alone="none") or (
        folder_problem(args.cache_dir, "--cache-dir")) or (
        folder_problem(args.artifact_dir, "--artifact-dir") if args.artifact_dir
        else artifact_dir_problem(url))


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()  # the budget counts from here: loading and planning too
    args = build_parser().parse_args(argv)
    # What runs alongside the study (the dashboard) ends with it, however it ends.
    with contextlib.ExitStack() as cleanup:
        return launch(args, sys.argv[1:] if argv is None else argv, cleanup, started)


def launch(args: argparse.Namespace, argv: list[str], cleanup: contextlib.ExitStack,
           started: float) -> int:
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.ERROR)
    demo, worker = args.data is None, args.worker_index is not None
    study_name = args.study if args.study is not None else (
        "demo" if demo else Path(args.data).resolve().name)
    url = storage_url(args.storage)
    problem = check_flags(args, url)
    if problem:
        return fail(problem)
    try:
        device = worker_device(args.device, args.worker_index or 0)
        budget = parse_budget(args.budget) if args.budget else (
            DEMO_BUDGET if demo else DEFAULT_BUDGETS[device.type])
        flagged = read_flagged(args.flagged) if args.flagged else []
        weights = WeightFinder(args.weights)
    except (DeviceError, ValueError, WeightsError) as exc:
        return fail(str(exc))
    except NoiseError as exc:
        return fail(f"--flagged: {exc}")
    if args.flagged and not flagged:
        return fail(f"--flagged {args.flagged} lists no eraser ids.")
    source = (f"--budget {args.budget}" if args.budget else
              "the demo's" if demo else f"default for a {device.type.upper()}")
    if args.workers > 1 or worker:
        torch.set_num_threads(threads_per_worker(args.workers))
    # only the process that may create the study looks for (and downloads) weights; workers
    # train what the stored space holds and fail a trial whose weights they lack, saying so
    try:
        families = choose_families(
            args.families or (CPU_FAMILIES if device.type == "cpu" else FAMILIES),
            args.backbones, weights, default=() if demo else BACKBONES, dry_run=args.dry_run,
            look=not worker)
    except WeightsError as exc:
        return fail(str(exc))
    if not (families.scratch or families.found or worker):
        return fail(f"--families {' '.join(args.families)} leaves nothing to search: no "
                    "ImageNet weights for the backbones here. Give them with --weights, or "
                    "add scratch.")
    base = SearchSpace(metric=args.metric, min_recall=args.min_recall, seed=args.seed,
                       threshold="min_recall" if args.min_recall else "max_f1",
                       noise_aware=bool(flagged), backbones=families.found,
                       backbone_modes=families.modes or BACKBONE_MODES,
                       scratch=families.scratch or worker)

    plan = planner(budget, source, device, base=base, sizes=args.sizes, epochs=args.epochs,
                   n_trials=args.n_trials, tier=args.rung, measure=args.estimate,
                   announce=None if worker else lambda: print(
                       "plan    timing the search space's networks here ...", flush=True))
    if demo:
        ensure_demo_data(DEMO_DIR, **{k: DEMO[k] for k in ("n", "seed", "subtle_rate")})
    data_path = DEMO_DIR if demo else Path(args.data)
    test_fraction = DEMO["test_fraction"] if demo and args.test_fraction is None \
        else args.test_fraction
    update, close = progress_bar("loading data") if not worker else (None, lambda: None)
    try:
        session = prepare(
            data_path, args.labels, study_name=study_name, storage_url=url, space=plan,
            sampler=args.sampler, pruner=args.pruner, seed=args.seed,
            val_fraction=args.val_fraction, test_fraction=test_fraction,
            group_regex=args.group_regex, artifact_dir=args.artifact_dir,
            cache_dir=args.cache_dir, heartbeat=args.heartbeat,
            worker_index=args.worker_index or 0, progress=update, flagged=flagged,
            dry_run=args.dry_run, portfolio=args.portfolio)
    except DataError as exc:
        close()
        return fail(f"{data_path} cannot be used:\n{format_problems(exc.problems)}\n"
                    "Run `python check_data.py` on it for the full report.")
    except (SplitError, StudyError, EstimateError) as exc:
        close()
        return fail(str(exc))
    close()
    done = n_finished(session.study)
    stored_plan = session.study.user_attrs.get("plan") or {}
    n_trials = args.n_trials if args.n_trials is not None else (
        session.plan.n_trials if session.plan else
        done + stored_plan.get("n_trials", RESUMED_TRIALS))
    deadline = started + budget
    timeout = min(deadline - time.monotonic(),
                  float("inf") if args.timeout is None else args.timeout)
    if worker:
        return run_worker(session, device, n_trials, timeout=timeout, deadline=deadline,
                          figures=args.trial_figures, weights=weights)

    print_session(session, study_name, url, device, budget, source, dry_run=args.dry_run)
    for line in families.lines(session.space):
        print(line)
    # A finished study shows in the dashboard for no time unless it is kept.
    if not args.dry_run and (args.keep_dashboard or (args.dashboard and done < n_trials)):
        try:
            serve_dashboard(session, url, cleanup, host=args.dashboard_host,
                            port=args.dashboard_port, keep=args.keep_dashboard)
        except dashboard_lib.DashboardError as exc:
            return fail(f"{exc} Nothing was trained.")
    else:
        print(f"\nWatch it live:  {session.dashboard_command()}   (in a second terminal)")
    if done >= n_trials:
        print(f"\nStudy {study_name!r} already holds {done} finished trials (asked: "
              f"{n_trials}); raise --n-trials to run more.")
        print_summary(session.study, study_name, url)
        return 0
    if args.dry_run:
        print(f"\ndry run: would train up to {n_trials - done} trial(s) of up to "
              f"{session.space.epochs} epochs within {budget / 60:.0f} min; nothing trained.")
        return 0
    try:
        if args.workers > 1:
            code = run_workers(__file__, argv, session, args.workers, n_trials,
                               deadline - time.monotonic())
        else:
            run_in_process(session, device, n_trials, timeout=timeout, deadline=deadline,
                           figures=args.trial_figures, weights=weights)
            code = 0
    except RepeatedFailure as exc:
        print(f"\n{exc}", file=sys.stderr)
        print_summary(session.study, study_name, url)
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted. The running trial is recorded as failed and will be run again; "
              f"rerun the same command to resume the study ({n_finished(session.study)}/"
              f"{n_trials} finished).", file=sys.stderr)
        return 130
    print(f"\nspent   {(time.monotonic() - started) / 60:.1f} of {budget / 60:.0f} min; "
          f"{n_finished(session.study) - done} trials finished in this run")
    print_summary(session.study, study_name, url)
    if demo and session.split.test:
        scored = best_test_metrics(session.study, session.data, session.split,
                                   session.artifact_dir)
        if scored is not None:
            print_test_score(*scored)
    return code


if __name__ == "__main__":
    def _terminate(signum, frame):  # SIGTERM ends the running trial like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before any trial ran (loading data, opening the storage)
        print("\nInterrupted; nothing was trained. Rerun the same command to start again.",
              file=sys.stderr)
        sys.exit(130)
