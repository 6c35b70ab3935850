"""The terminal side of a running study (``run_study.py``): its bars, its workers' lines, and
what it prints before and after: the plan, the best trials, the test score and what it
means next to chance."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from cli.checks import folder_problem
from cli.common import hold_on_exit
from data import format_summary
from model import GRADED
from model.pretrained import WEIGHTS_ENV, WeightFinder, check_weights
from reporting import dashboard as dashboard_lib
from reporting.plots import LABELS
from reporting.progress import StudyProgress, trial_line
from reporting.trial_report import dashboard_hook
from search.plan import Plan
from search.session import Session, best_trials, make_objective, run
from search.space import SCRATCH, SearchSpace
from search.study import (
    GracefulStop,
    RepeatedFailure,
    artifact_dir_for,
    mask_url,
    n_finished,
    storage_for_commands,
    storage_url,
)
from search.workers import start_workers, supervise, without_storage
from training.device import describe_device


def ensure_demo_data(folder: Path, *, n: int, seed: int, subtle_rate: float) -> None:
    """The demo's synthetic delivery in ``folder``, made once (an interrupted one, or one of
    another size from an earlier version, again)."""
    labels = folder / "labels_multiclass.csv"
    if labels.exists() and len(labels.read_text().splitlines()) == n + 1:
        return
    # Here, not at the top: the renderer (scipy, fonts) costs about a second to import and
    # only the demo's first run needs it.
    from data.synth import generate

    print(f"making the synthetic demo set in {folder}/ (once) ...")
    generate(folder, n=n, seed=seed, subtle_rate=subtle_rate, force=True)


def print_session(session: Session, name: str, url: str, device: torch.device, budget: float,
                  source: str, *, dry_run: bool) -> None:
    """The data, the study, the split, the device, the plan and the session's notes."""
    print(format_summary(session.data.summary()))
    state = ("resumed" if session.resumed
             else "new; the dry run does not create it" if dry_run else "new")
    print(f"\nstudy   {name} ({state}) in {mask_url(url)}")
    print(f"split   {len(session.split.train_ids())} train / {len(session.split.val_ids())} "
          f"validation / {len(session.split.test)} test erasers, hash {session.split.hash}")
    print(f"device  {describe_device(device)}")
    print_plan(session.plan, session, budget, source)
    for note in session.notes:
        print(f"note    {note}")
    for warning in session.warnings:
        print(f"WARNING {warning}")


def serve_dashboard(session: Session, url: str, cleanup: contextlib.ExitStack, *, host: str,
                    port: int, keep: bool) -> None:
    """Start optuna-dashboard for the run, stopped with it unless ``keep``; raises
    ``DashboardError``."""
    warning = dashboard_lib.exposure_warning(host, port)
    if warning:
        print(warning, file=sys.stderr)
    board = cleanup.enter_context(dashboard_lib.start(url, session.artifact_dir, host=host,
                                                      port=port))
    if keep:
        cleanup.push(hold_on_exit(board))
    print(f"\nWatch it live:  {board.study_url(session.study)}  (optuna-dashboard; "
          f"{'kept after the study' if keep else 'stops with the study'})")


def print_plan(plan: Plan | None, session: Session, budget: float, source: str) -> None:
    """How the budget is spent: the new study's plan, or the resumed study's own space."""
    if plan is not None:
        for line in plan.describe():
            print(f"plan    {line}")
        return
    sp = session.space
    print(f"plan    {budget / 60:.0f} min ({source}) on the resumed study's own space: inputs "
          f"{'/'.join(map(str, sp.sizes))} px, up to {sp.epochs} epochs a trial")


@dataclass(frozen=True)
class Families:
    """The network families a new study searches: the scratch CNN (or not), the pretrained
    backbones whose ImageNet weights are here (or were just downloaded), and how."""

    scratch: bool
    modes: tuple[str, ...]  # frozen, finetune, patch
    wanted: tuple[str, ...]  # the backbones asked for
    found: tuple[str, ...]  # those with weights
    dry_run: bool = False

    def lines(self, space: SearchSpace) -> list[str]:
        """What the study searches (its stored space: a resumed study keeps its own) and, in
        one line, the backbones left out for want of weights and how to give them."""
        words = {"finetune": "fine-tuned",
                 "patch": f"patch by patch at {'/'.join(map(str, space.patch_sizes))} px"}
        modes = " or ".join(words.get(m, m) for m in space.backbone_modes)
        families = ["scratch CNN"] * space.scratch + (
            [f"{', '.join(space.backbones)} (ImageNet, {modes})"] if space.backbones else [])
        lines = [f"family  {', '.join(families)}"]
        missing = [n for n in self.wanted if n not in self.found and n not in space.backbones]
        if missing:
            why = ("(a dry run downloads nothing)" if self.dry_run
                   else "and none to download (offline?)")
            lines.append(f"note    no ImageNet weights here for {', '.join(missing)} {why}: "
                         f"searching without them. Give them with --weights or {WEIGHTS_ENV} "
                         "(files named <backbone>.pth or .safetensors).")
        return lines


def choose_families(families: Sequence[str], backbones: Sequence[str] | None,
                    weights: WeightFinder, *, default: Sequence[str], dry_run: bool = False,
                    look: bool = True) -> Families:
    """``--families`` and ``--backbones`` (None: ``default``; ``none``: no backbone) with
    the weights ``weights`` finds; downloads them unless ``dry_run``. Every file found must
    load (:class:`~model.pretrained.WeightsError` otherwise: checked here, before the study,
    not by failing trial after trial). ``look=False`` (a worker: it trains what the stored
    space holds) looks for nothing."""
    modes = tuple(f for f in families if f != SCRATCH)
    wanted = () if backbones == ["none"] or not modes else tuple(backbones or default)
    files = {} if not look else weights.local(wanted) if dry_run else weights.fetch(wanted)
    for name, file in files.items():
        check_weights(name, file)
    return Families(SCRATCH in families, modes, wanted, tuple(files), dry_run)


def run_in_process(session: Session, device: torch.device, n_trials: int, *,
                   timeout: float | None, deadline: float | None, figures: bool,
                   weights: WeightFinder | None = None) -> None:
    """One worker with a bar for the study and one for the running trial's epochs."""
    with StudyProgress(session.study, n_trials) as progress, GracefulStop() as stop:
        notes = dashboard_hook(session, figures=figures)
        objective = make_objective(session, device, on_epoch=progress.on_epoch,
                                   on_result=[notes], on_stop=[notes.stopped],
                                   deadline=deadline, weights=weights)
        run(session, objective, n_trials=n_trials, timeout=timeout,
            on_trial=progress.on_trial, stop=stop, on_notice=progress.study_bar.write)


def run_worker(session: Session, device: torch.device, n_trials: int, *,
               timeout: float | None, deadline: float | None, figures: bool,
               weights: WeightFinder | None = None) -> int:
    """A child of --workers: plain lines, no bars (the parent aggregates)."""
    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(trial_line(trial), flush=True)

    print(f"started on {describe_device(device)}", flush=True)
    try:
        with GracefulStop() as stop:
            notes = dashboard_hook(session, figures=figures)
            objective = make_objective(session, device, deadline=deadline, on_result=[notes],
                                       on_stop=[notes.stopped], weights=weights)
            run(session, objective, n_trials=n_trials, timeout=timeout, on_trial=on_trial,
                stop=stop, on_notice=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted: the running trial (if any) is FAIL and queued again", flush=True)
        return 130
    except RepeatedFailure as exc:
        print(exc, flush=True)
        return 1
    return 0


def run_workers(script: str, argv: list[str], session: Session, n_workers: int,
                n_trials: int, remaining: float | None) -> int:
    """Start the workers on the study created here, relay their lines, draw one bar. They
    get this run's total and what is left of its budget explicitly."""
    command = [sys.executable, os.path.abspath(script), *without_storage(argv),
               "--n-trials", str(n_trials)]
    if remaining is not None:
        command += ["--budget", f"{max(60.0, remaining):.0f}"]
    procs = start_workers(command, n_workers, session.storage_url)
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
    if not any(codes):
        return 0
    if n_finished(session.study) >= n_trials:  # a killed worker's trial was run by another
        print(f"note    worker exit codes {codes}, but the study holds its {n_trials} trials",
              file=sys.stderr)
        return 0
    if 1 in codes:
        print(f"stopped: worker(s) {', '.join(str(i) for i, c in enumerate(codes) if c == 1)} "
              "ended because their trials kept failing the same way (their lines above say "
              "how); the study is kept: fix the cause and rerun the same command to resume it.",
              file=sys.stderr)
        return 1
    print(f"worker exit codes: {codes}", file=sys.stderr)
    return 1


def artifact_dir_problem(url: str) -> str | None:
    """Whether the study's default artifact folder (next to a SQLite file) can be written;
    a URL that does not parse is left to the storage's own message."""
    try:
        folder = artifact_dir_for(url)
    except Exception:
        return None
    problem = folder_problem(folder, "the artifact folder")
    return problem and f"{problem} Pass --artifact-dir to put the trials' files elsewhere."


def print_summary(study: optuna.Study, name: str, url: str) -> None:
    """The best trials and the command that exports the best."""
    top = best_trials(study)
    if not top:
        print("\nNo trial has completed yet.")
        return
    metric = study.user_attrs.get("space", {}).get("metric", "score")
    print(f"\nBest trials of {name!r} ({metric}, validation):")
    print(f"{'trial':>5} {metric:>10} {'print':>6} {'phys.':>6} {'epochs':>6} {'params':>9}"
          "  architecture   (print/phys.: AUROC per defect kind)")
    for t in top:
        a = t.user_attrs
        print(f"{t.number:5d} {t.value:10.4f} {a.get('print_error_auroc', math.nan):6.3f} "
              f"{a.get('physical_error_auroc', math.nan):6.3f} "
              f"{a.get('best_epoch', 0):3d}/{a.get('epochs_run', 0):<2d} {a.get('params', 0):9d}"
              f"  {a.get('architecture', '')}" + ("  [portfolio]" if "portfolio" in a else "")
              + ("  [partial: cut by the budget]" if "partial" in a else ""))
    storage = "" if url == storage_url(None) else f" --storage {storage_for_commands(url)}"
    print(f"\nExport the best:  python export_best.py --study {name} --group TEAM{storage}")


def print_test_score(metrics: dict[str, float], trial: int, prevalence: dict[str, float]
                     ) -> None:
    """The best trial's scores on the test split, each next to what chance would score."""
    print(f"\nTest split ({metrics['n']} erasers no trial, threshold or epoch choice saw), "
          f"trial {trial} at its thresholds:")
    print(f"  {'':16s} {'AUC-PR':>7} {'chance':>7} {'AUROC':>6} {'F1':>6}")
    for name in (*GRADED, "defect"):
        print(f"  {LABELS[name]:16s} {metrics.get(f'{name}_ap', math.nan):7.3f} "
              f"{prevalence[name]:7.3f} {metrics.get(f'{name}_auroc', math.nan):6.3f} "
              f"{metrics.get(f'{name}_f1', math.nan):6.3f}")
    chance = sum(prevalence[n] for n in GRADED) / len(GRADED)
    print(f"  graded AUC-PR {metrics.get('graded_ap', math.nan):.3f} (chance {chance:.3f}: a "
          "model that guesses scores each class's share of erasers; AUROC chance is 0.5)")
