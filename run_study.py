"""Launch or resume a hyperparameter search for an eraser-inspection CNN.

With no arguments it runs the demo: synthetic MILAN-format data (made once in demo_data/),
study "demo" in studies.db, a budget that finishes in a few minutes on a CPU. With --data it
searches your data. Rerunning the same command resumes the study until it holds --n-trials
finished trials in total. Watch it live with the optuna-dashboard command it prints, or
let --dashboard serve it while the study runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from cli.common import HelpFormatter, fail, hold_on_exit, progress_bar, setup_logging
from data import DataError, SplitError, format_problems, format_summary
from data.cache import default_cache_dir
from data.noise import NoiseError, read_flagged
from reporting import dashboard as dashboard_lib
from reporting.progress import StudyProgress, trial_line
from reporting.trial_report import dashboard_hook
from search.estimate import EstimateError, describe_estimate, duration, estimate_study
from search.session import best_trials, make_objective, prepare, run
from search.space import SearchSpace
from search.study import (
    PRUNERS,
    SAMPLERS,
    GracefulStop,
    StudyError,
    mask_url,
    n_finished,
    storage_for_commands,
    storage_url,
)
from search.workers import start_workers, supervise, without_storage
from training.device import (
    DeviceError,
    describe_device,
    threads_per_worker,
    worker_device,
)

DEMO_DIR = Path("demo_data")
# The demo must learn visibly within minutes on a laptop CPU: a quarter of its defects are
# subtle (half in the default synthetic set), inputs stay small, widths narrow.
DEMO = {"n": 400, "seed": 1, "subtle_rate": 0.25, "n_trials": 16, "epochs": 12,
        "sizes": (64, 96), "base_widths": (16, 24), "depth": (3, 4), "batch_sizes": (32,)}
FULL = {"n_trials": 50, "epochs": 30, "sizes": (96, 128, 160)}
LONG_ON_CPU = 4 * 3600  # seconds: beyond this the estimate suggests ways to shrink the study


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of .npy/PNG files, arrays.zip or images.zip (with "
                   "the label CSVs next to them); default: the synthetic demo set")
    g.add_argument("--labels", nargs="+", metavar="CSV",
                   help="label CSV(s); default: the CSVs found next to the images")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of erasers held out for validation (stratified on X_Y)")
    g.add_argument("--group-regex", default=None,
                   help="keep erasers whose ids share this regex's first group (a pack) on "
                   "one side of the split, e.g. '^(P\\d+)_'")
    g.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (reused by later runs)")
    g = p.add_argument_group("study")
    g.add_argument("--study", default=None, help="study name (default: demo, or the data "
                   "folder's name with --data)")
    g.add_argument("--storage", default=None, help="SQLAlchemy URL; default: "
                   "$OPTUNA_STORAGE, else sqlite:///studies.db")
    g.add_argument("--artifact-dir", default=None,
                   help="where trial weights and figures go (default: artifacts/ next to a "
                   "SQLite file, else ./artifacts)")
    g.add_argument("--n-trials", type=int, default=None,
                   help=f"finished trials the study should hold in total (default: "
                   f"{DEMO['n_trials']} for the demo, {FULL['n_trials']} with --data)")
    g.add_argument("--timeout", type=float, default=None,
                   help="stop starting new trials after this many seconds")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"max epochs per trial (default: {DEMO['epochs']} demo, "
                   f"{FULL['epochs']} with --data)")
    g.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"input sizes to search (default: {DEMO['sizes']} demo, "
                   f"{FULL['sizes']} with --data)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search strategy")
    g.add_argument("--pruner", choices=PRUNERS, default="hyperband",
                   help="stops hopeless trials early")
    g.add_argument("--metric", choices=("graded_ap", "defect_ap", "graded_f1"),
                   default="graded_ap", help="validation metric to maximise (graded_ap: mean "
                   "AUC-PR over print error, physical error, no defect)")
    g.add_argument("--min-recall", type=float, default=None,
                   help="choose decision thresholds with at least this validation recall "
                   "(default: max F1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split, sampler and "
                   "training")
    g.add_argument("--flagged", metavar="CSV", default=None,
                   help="suspected mislabels (label_issues.csv from `python -m "
                   "search.label_issues`): the search also tunes their loss weight "
                   "(flagged_weight in [0, 1], 0 = dropped)")
    g = p.add_argument_group("dashboard")
    g.add_argument("--dashboard", action="store_true",
                   help="serve optuna-dashboard on this study while it runs and print its URL")
    g.add_argument("--dashboard-port", type=int, default=dashboard_lib.DEFAULT_PORT,
                   help="its port")
    g.add_argument("--dashboard-host", default=dashboard_lib.DEFAULT_HOST,
                   help="its address; anything but loopback exposes it to the network, and "
                   "it has no authentication")
    g.add_argument("--keep-dashboard", action="store_true",
                   help="keep serving after the study ends, until Ctrl-C (implies --dashboard)")
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine sharing the study (spread "
                   "round-robin over the GPUs; --device cuda:N puts them all on GPU N)")
    g.add_argument("--heartbeat", type=int, default=30, help="seconds between a running "
                   "trial's heartbeats; a trial silent for 4x this is failed and retried")
    g.add_argument("--trial-figures", action=argparse.BooleanOptionalAction, default=True,
                   help="draw each finished trial's figures for the dashboard (curves, "
                   "confusion matrix, PR curve, worst errors; about a second per trial on a "
                   "CPU); the note with its metrics is written either way")
    g.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="before training, time one epoch of a median configuration of the "
                   "space here and print how long the trials will take (seconds on a GPU; "
                   "up to a minute on a small CPU with the full space)")
    g.add_argument("--dry-run", action="store_true",
                   help="validate data, split and storage, print the plan and the time "
                   "estimate; train nothing and write nothing to the storage")
    g.add_argument("-v", "--verbose", action="store_true", help="log more")
    g.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    return p


def ensure_demo_data(folder: Path) -> None:
    if (folder / "labels_multiclass.csv").exists():
        return
    # Here, not at the top: the renderer (scipy, fonts) costs about a second to import and
    # only the demo's first run needs it.
    from data.synth import generate

    print(f"making the synthetic demo set in {folder}/ (once) ...")
    generate(folder, n=DEMO["n"], seed=DEMO["seed"], subtle_rate=DEMO["subtle_rate"],
             force=True)  # force: redo an interrupted one


def search_space(args: argparse.Namespace, demo: bool) -> SearchSpace:
    preset = DEMO if demo else FULL
    extra = {k: DEMO[k] for k in ("base_widths", "depth", "batch_sizes")} if demo else {}
    return SearchSpace(sizes=tuple(args.sizes or preset["sizes"]),
                       epochs=args.epochs or preset["epochs"],
                       patience=max(3, (args.epochs or preset["epochs"]) // 4),
                       metric=args.metric,
                       threshold="min_recall" if args.min_recall else "max_f1",
                       min_recall=args.min_recall, seed=args.seed,
                       noise_aware=bool(args.flagged), **extra)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # What runs alongside the study (the dashboard) ends with it, however it ends.
    with contextlib.ExitStack() as cleanup:
        return launch(args, argv, cleanup)


def launch(args: argparse.Namespace, argv: list[str] | None,
           cleanup: contextlib.ExitStack) -> int:
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.ERROR)
    demo = args.data is None
    worker = args.worker_index is not None
    study_name = args.study or ("demo" if demo else Path(args.data).resolve().name)
    n_trials = args.n_trials or (DEMO if demo else FULL)["n_trials"]
    for name, value, low in (("--n-trials", n_trials, 1), ("--workers", args.workers, 1),
                             ("--heartbeat", args.heartbeat, 1)):
        if value < low:
            return fail(f"{name} must be at least {low}, not {value}.")
    url = storage_url(args.storage)

    try:
        device = worker_device(args.device, args.worker_index or 0)
    except DeviceError as exc:
        return fail(str(exc))
    if args.workers > 1 or worker:
        torch.set_num_threads(threads_per_worker(args.workers))

    flagged: list[str] = []
    if args.flagged:
        try:
            flagged = read_flagged(args.flagged)
        except NoiseError as exc:
            return fail(f"--flagged: {exc}")
        if not flagged:
            return fail(f"--flagged {args.flagged} lists no eraser ids.")
    if demo:
        ensure_demo_data(DEMO_DIR)
    data_path = DEMO_DIR if demo else Path(args.data)
    update, close = progress_bar("loading data") if not worker else (None, lambda: None)
    try:
        session = prepare(
            data_path, args.labels, study_name=study_name, storage_url=url,
            space=search_space(args, demo), sampler=args.sampler, pruner=args.pruner,
            seed=args.seed, val_fraction=args.val_fraction, group_regex=args.group_regex,
            artifact_dir=args.artifact_dir, cache_dir=args.cache_dir,
            heartbeat=args.heartbeat, worker_index=args.worker_index or 0, progress=update,
            flagged=flagged, dry_run=args.dry_run)
    except DataError as exc:
        close()
        return fail(f"{data_path} cannot be used:\n{format_problems(exc.problems)}\n"
                    "Run `python check_data.py` on it for the full report.")
    except (SplitError, StudyError) as exc:
        close()
        return fail(str(exc))
    close()

    if worker:
        return run_worker(session, device, n_trials, args.timeout, args.worker_index,
                          figures=args.trial_figures)

    print(format_summary(session.data.summary()))
    state = ("resumed" if session.resumed
             else "new; the dry run does not create it" if args.dry_run else "new")
    print(f"\nstudy   {study_name} ({state}) in "
          f"{mask_url(url)}")
    print(f"split   {len(session.split.train_ids())} train / {len(session.split.val_ids())} "
          f"validation erasers, hash {session.split.hash}")
    print(f"device  {describe_device(device)}")
    for note in session.notes:
        print(f"note    {note}")
    done = n_finished(session.study)
    if args.estimate and done < n_trials:
        print_estimate(session, device, n_trials - done, args.timeout)
    dashboard = None
    if ((args.dashboard or args.keep_dashboard) and not args.dry_run
            and (args.keep_dashboard or done < n_trials)):
        warning = dashboard_lib.exposure_warning(args.dashboard_host, args.dashboard_port)
        if warning:
            print(warning, file=sys.stderr)
        try:
            dashboard = cleanup.enter_context(dashboard_lib.start(
                url, session.artifact_dir, host=args.dashboard_host, port=args.dashboard_port))
        except dashboard_lib.DashboardError as exc:
            return fail(f"{exc} Nothing was trained.")
        if args.keep_dashboard:
            cleanup.push(hold_on_exit(dashboard))
    if dashboard is not None:
        print(f"\nWatch it live:  {dashboard.study_url(session.study)}  (optuna-dashboard; "
              f"{'kept after the study' if args.keep_dashboard else 'stops with the study'})")
    else:
        print(f"\nWatch it live:  {session.dashboard_command()}")
    if done >= n_trials:
        print(f"\nStudy {study_name!r} already holds {done} finished trials (asked: "
              f"{n_trials}); raise --n-trials to run more.")
        print_summary(session.study, study_name, url)
        return 0
    if args.dry_run:
        print(f"\ndry run: would train {n_trials - done} more trial(s) of up to "
              f"{session.space.epochs} epochs; nothing trained.")
        return 0

    try:
        if args.workers > 1:
            code = run_workers(args, argv, session, n_trials)
        else:
            run_in_process(session, device, n_trials, args.timeout, figures=args.trial_figures)
            code = 0
    except KeyboardInterrupt:
        print(f"\nInterrupted. The running trial is recorded as failed and will be run again; "
              f"rerun the same command to resume the study ({n_finished(session.study)}/"
              f"{n_trials} finished).", file=sys.stderr)
        return 130
    print_summary(session.study, study_name, url)
    return code


def print_estimate(session, device: torch.device, trials: int, timeout: float | None) -> None:
    """How long the remaining trials will take here, measured (see search.estimate)."""
    print("budget  timing one epoch of a median configuration of the search space ...",
          flush=True)
    try:
        est = estimate_study(session.space, len(session.split.train_ids()),
                             len(session.split.val_ids()), device, trials)
    except EstimateError as exc:
        print(f"budget  no estimate: the timed configuration {exc}; the progress bar shows "
              "the pace once trials finish")
        return
    for line in describe_estimate(est):
        print(f"budget  {line}")
    if timeout:
        print(f"budget  --timeout stops starting trials after {duration(timeout)}")
    elif device.type == "cpu" and est.study_seconds > LONG_ON_CPU:
        print("note    that is long for this CPU: --timeout SECONDS stops starting trials "
              "after that, fewer --sizes or --n-trials shrink the study, and a GPU trains "
              "these networks one to two orders of magnitude faster")


def run_in_process(session, device, n_trials: int, timeout: float | None, *,
                   figures: bool = True) -> None:
    """One worker with a bar for the study and one for the running trial's epochs."""
    with StudyProgress(session.study, n_trials) as progress, GracefulStop() as stop:
        objective = make_objective(session, device, on_epoch=progress.on_epoch,
                                   on_result=[dashboard_hook(session, figures=figures)])
        run(session, objective, n_trials=n_trials, timeout=timeout,
            on_trial=progress.on_trial, stop=stop)


def run_worker(session, device, n_trials: int, timeout: float | None, index: int, *,
               figures: bool = True) -> int:
    """A child of --workers: plain lines, no bars (the parent aggregates)."""
    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(trial_line(trial), flush=True)

    print(f"started on {describe_device(device)}", flush=True)
    try:
        with GracefulStop() as stop:
            run(session, make_objective(session, device,
                                        on_result=[dashboard_hook(session, figures=figures)]),
                n_trials=n_trials, timeout=timeout,
                on_trial=on_trial, stop=stop)
    except KeyboardInterrupt:
        print("interrupted: the running trial (if any) is FAIL and queued again", flush=True)
        return 130
    return 0


def run_workers(args: argparse.Namespace, argv: list[str] | None, session,
                n_trials: int) -> int:
    """Start K workers on the study created above, relay their lines, draw one bar."""
    command = [sys.executable, os.path.abspath(__file__),
               *without_storage(argv if argv is not None else sys.argv[1:])]
    procs = start_workers(command, args.workers, session.storage_url)
    bar = tqdm(total=n_trials, initial=n_finished(session.study), desc="study",
               unit="trial", dynamic_ncols=True)

    def on_progress(done: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        codes = supervise(procs, session.study, on_progress=on_progress,
                          on_line=lambda i, line: bar.write(f"[worker {i}] {line}"))
    finally:
        bar.close()
    if any(codes):
        print(f"worker exit codes: {codes}", file=sys.stderr)
    return 0 if all(c == 0 for c in codes) else 1


def print_summary(study: optuna.Study, name: str, url: str) -> None:
    top = best_trials(study)
    if not top:
        print("\nNo trial has completed yet.")
        return
    metric = study.user_attrs.get("space", {}).get("metric", "score")
    print(f"\nBest trials of {name!r} ({metric}, validation):")
    print(f"{'trial':>5} {metric:>10} {'defect_ap':>9} {'epochs':>6} {'params':>9}  architecture")
    for t in top:
        a = t.user_attrs
        print(f"{t.number:5d} {t.value:10.4f} {a.get('defect_ap', float('nan')):9.4f} "
              f"{a.get('best_epoch', 0):3d}/{a.get('epochs_run', 0):<2d} {a.get('params', 0):9d}"
              f"  {a.get('architecture', '')}")
    storage = "" if url == storage_url(None) else f" --storage {storage_for_commands(url)}"
    print(f"\nExport the best:  python export_best.py --study {name} --group TEAM{storage}")


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
