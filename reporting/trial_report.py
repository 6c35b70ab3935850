"""What a user sees of each trial in optuna-dashboard: figures (artifacts) and notes.

:class:`TrialReport` is an :class:`~search.objective.Objective` ``on_result`` hook. For every
finished trial it uploads, with Optuna's artifact API, small PNGs that optuna-dashboard shows
inline on the trial's page (training curves, confusion matrix at the chosen threshold, the PR
curve with its operating point, the worst false negatives and false positives) and writes a
short markdown note with optuna-dashboard's note API (stored as study system attributes, so it
works with every RDB storage and from any worker). :func:`write_study_note` gives the study a
note with the data summary and the split.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import upload_artifact
from optuna_dashboard import get_note, save_note

from data import EraserSet, Split
from model import GRADED, PROB_NAMES, describe
from model.channels import CLASS_CODES
from reporting import plots
from reporting.plots import LABELS
from search.session import Session
from search.space import SearchSpace
from training.loop import TrainResult

log = logging.getLogger(__name__)

#: Artifact file names, in the order they are uploaded (and listed by the dashboard).
FIGURES = ("curves.png", "confusion.png", "pr_curve.png", "false_negatives.png",
           "false_positives.png")
ERROR_IMAGE_SIZE = 96  # px per channel in the error grids: detail enough, PNGs stay small
N_ERRORS = 3  # erasers per error grid: a handful, ~100 kB at most

DEFECT = PROB_NAMES.index("defect")


class TrialReport:
    """``on_result`` hook: figures as trial artifacts plus a markdown note per trial.

    ``artifact_store`` None writes the note only. A figure that cannot be drawn is logged
    and skipped: it must never cost the trial that was just trained.
    """

    def __init__(self, data: EraserSet,
                 artifact_store: optuna.artifacts.FileSystemArtifactStore | None, *,
                 n_errors: int = N_ERRORS, image_size: int = ERROR_IMAGE_SIZE):
        self.data = data
        self.artifact_store = artifact_store
        self.n_errors = n_errors
        self.image_size = image_size

    def __call__(self, trial: optuna.Trial, result: TrainResult) -> None:
        if self.artifact_store is not None:
            with tempfile.TemporaryDirectory() as tmp:
                for path in render_figures(result, self.data, tmp, n_errors=self.n_errors,
                                           image_size=self.image_size,
                                           title=f"trial {trial.number}"):
                    upload_artifact(artifact_store=self.artifact_store, file_path=str(path),
                                    study_or_trial=trial, mimetype="image/png")
        save_note(trial, trial_note(trial.number, result,
                                    portfolio=trial.user_attrs.get("portfolio"),
                                    found=trial.user_attrs.get("portfolio_found")))


def render_figures(result: TrainResult, data: EraserSet, out_dir: str | Path, *,
                   n_errors: int = N_ERRORS, image_size: int = ERROR_IMAGE_SIZE,
                   title: str | None = None) -> list[Path]:
    """Draw the :data:`FIGURES` of one run into ``out_dir``; returns those that were drawn."""
    out = Path(out_dir)
    y = np.asarray(result.val_targets).max(axis=1).astype(int)  # defect = print or physical
    scores = np.asarray(result.val_probs)[:, DEFECT]
    threshold = float(result.thresholds["defect"])
    fn, fp = worst_errors(y, scores, threshold, n_errors)
    ids = list(result.val_ids)
    size = min(data.image_size, image_size)

    def grid(rows: np.ndarray, what: str, total: int, path: Path) -> Path:
        row_ids = [ids[i] for i in rows]
        images = (data.images(size=size, ids=row_ids) if row_ids
                  else np.zeros((0, 6, size, size), np.uint8))
        return plots.error_grid(images, row_ids, scores[rows].tolist(), path,
                                f"{what} ({len(rows)} of {total} shown)")

    n_fn = int(((y == 1) & (scores < threshold)).sum())
    n_fp = int(((y == 0) & (scores >= threshold)).sum())
    jobs = {
        "curves.png": lambda p: plots.training_curves(
            result.history, p, metric=result.config.train.metric, title=title),
        "confusion.png": lambda p: plots.confusion_matrix_plot(
            y, scores >= threshold, p, title=f"Defect at threshold {threshold:.2f}"),
        "pr_curve.png": lambda p: plots.pr_curve_plot(y, scores, threshold, p),
        "false_negatives.png": lambda p: grid(
            fn, f"Worst false negatives: labelled defective, p(defect) < {threshold:.2f}",
            n_fn, p),
        "false_positives.png": lambda p: grid(
            fp, f"Worst false positives: labelled good, p(defect) >= {threshold:.2f}", n_fp, p),
    }
    drawn = []
    for name in FIGURES:
        try:
            drawn.append(plots.compact_png(jobs[name](out / name)))
        except Exception:  # a figure is a nicety; the trial's result is already recorded
            log.warning("could not draw %s", name, exc_info=True)
    return drawn


def worst_errors(y: np.ndarray, scores: np.ndarray, threshold: float,
                 n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the ``n`` most confident false negatives and false positives.

    False negatives are sorted by rising probability (the most confidently missed first),
    false positives by falling probability.
    """
    y = np.asarray(y)
    s = np.asarray(scores, dtype=float)
    fn = np.flatnonzero((y == 1) & (s < threshold))
    fp = np.flatnonzero((y == 0) & (s >= threshold))
    fn = fn[np.argsort(s[fn], kind="stable")][:n]
    fp = fp[np.argsort(-s[fp], kind="stable")][:n]
    return fn, fp


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def trial_note(number: int, result: TrainResult, *, portfolio: str | None = None,
               found: str | None = None) -> str:
    """The markdown note of one finished trial (``portfolio``: the proven starting point it
    replays, and how that was ``found``)."""
    m = result.metrics
    tc = result.config.train
    metric = tc.metric
    policy = ("max F1" if tc.threshold == "max_f1"
              else f"recall >= {tc.min_recall:g}")
    rows = [f"| {LABELS[name]} | {_fmt(m.get(f'{name}_ap'))} | {_fmt(m.get(f'{name}_auroc'))} | "
            f"{_fmt(m.get(f'{name}_f1'))} | "
            f"{_fmt(m.get(f'{name}_precision'))} | {_fmt(m.get(f'{name}_recall'))} | "
            f"{_fmt(result.thresholds.get(name), 2)} |"
            for name in (*GRADED, "defect")]
    start = ([f"**Proven starting point `{portfolio}`** (search/portfolio.json): {found}.", ""]
             if portfolio else [])
    return "\n".join([
        f"## Trial {number}: {metric} {_fmt(result.score, 4)}",
        "",
        *start,
        f"`{describe(result.config.model)}`",
        "",
        f"**{result.params:,} parameters**, {result.macs / 1e6:.1f} M MACs per eraser; "
        f"{tc.optimizer} lr {tc.lr:.2g}, batch {tc.batch_size}, loss {tc.loss}.",
        "",
        "| validation | AUC-PR | AUROC | F1 | precision | recall | threshold |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Thresholds chosen on validation ({policy}); graded = mean of the first three rows: "
        f"AUC-PR {_fmt(m.get('graded_ap'))}, F1 {_fmt(m.get('graded_f1'))}.",
        "",
        f"Best epoch **{result.best_epoch}** of {result.epochs_run}, {result.seconds:.0f} s. "
        f"Stopped: {result.stop_reason}.",
    ])


def _tail(path: str | Path) -> str:
    """The last two parts of a path (``delivery/arrays``): recognisable, nothing private."""
    return "/".join(Path(str(path)).parts[-2:])


def study_note(study_name: str, data: EraserSet, split: Split, space: SearchSpace) -> str:
    """The markdown note of a study: data, class balance, split and what is maximised.

    Holds no storage URL (it could carry a password) and no machine paths.
    """
    s = data.summary()
    n = max(s["erasers"], 1)
    lines = [
        f"## Study {study_name}",
        "",
        f"**{s['erasers']} erasers** from `{_tail(s['source'])}` "
        f"({s['image_size']}x{s['image_size']} px, channels {', '.join(s['channels'])}); "
        f"labels: {', '.join(Path(f).name for f in s['label_files']) or 'none'} "
        f"({s['label_kind']}).",
        "",
    ]
    if "defect" in s:
        lines += ["| class | erasers | share |", "|---|---|---|"]
        lines += [f"| {name} | {k} | {100 * k / n:.1f} % |" for name, k in
                  (("defective", s["defect"]), ("print error (X=1)", s["print"]),
                   ("physical error (Y=1)", s["physical"]))]
        lines += [f"| class {c} | {s['classes'].get(c, 0)} | "
                  f"{100 * s['classes'].get(c, 0) / n:.1f} % |" for c in CLASS_CODES]
        lines.append("")
    lines += [
        f"Split: {len(split.train_ids())} train / {len(split.val_ids())} validation erasers "
        f"(stratified on X_Y, k={split.k}, seed {split.seed}"
        + (f", groups `{split.group_regex}`" if split.group_regex else "")
        + f"), hash `{split.hash}`.",
        "",
        f"Data hash `{data.data_hash[:16]}`. Maximising validation **{space.metric}**; up to "
        f"{space.epochs} epochs per trial at {', '.join(map(str, space.sizes))} px.",
        "",
        "Each finished trial has a note and figures (Artifacts): training curves, confusion "
        "matrix, PR curve, worst false negatives and false positives.",
    ]
    return "\n".join(lines)


def write_study_note(study: optuna.Study, data: EraserSet, split: Split,
                     space: SearchSpace) -> bool:
    """Give ``study`` its note unless it already has one (which a user may have edited in the
    dashboard). Returns whether it wrote one."""
    if get_note(study):
        return False
    save_note(study, study_note(study.study_name, data, split, space))
    return True


def dashboard_hook(session: Session, *, figures: bool = True) -> TrialReport:
    """What the dashboard shows of a session's study: writes the study's note now (unless it
    has one) and returns the ``on_result`` hook that gives each finished trial its note and,
    with ``figures``, its figures (about a second per trial on a CPU)."""
    write_study_note(session.study, session.data, session.split, session.space)
    return TrialReport(session.data, session.artifact_store if figures else None)


def note_of(study_or_trial: optuna.Study | optuna.Trial | optuna.trial.FrozenTrial,
            study: optuna.Study | None = None) -> str:
    """The dashboard note of a study, a live trial, or a frozen trial of ``study``."""
    if isinstance(study_or_trial, optuna.trial.FrozenTrial):
        if study is None:
            raise ValueError("a FrozenTrial needs its study")
        return get_note(optuna.Trial(study, study_or_trial._trial_id))
    return get_note(study_or_trial)


__all__ = ("FIGURES", "TrialReport", "dashboard_hook", "note_of", "render_figures", "study_note",
                          "trial_note", "worst_errors", "write_study_note")
