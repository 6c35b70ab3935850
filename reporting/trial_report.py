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
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna import visualization as vis
from optuna.artifacts import upload_artifact
from optuna_dashboard import get_note, save_note, save_plotly_graph_object

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
        images = []
        if self.artifact_store is not None:
            with tempfile.TemporaryDirectory() as tmp:
                for path in render_figures(result, self.data, tmp, n_errors=self.n_errors,
                                           image_size=self.image_size,
                                           title=f"trial {trial.number}"):
                    images.append((path.stem.replace("_", " "), self._upload(trial, path)))
        save_note(trial, trial_note(trial.number, result,
                                    portfolio=trial.user_attrs.get("portfolio"),
                                    found=trial.user_attrs.get("portfolio_found"),
                                    images=images))
        try:  # this trial is not COMPLETE yet: the charts count the ones before it
            refresh_study_charts(trial.study)
        except Exception:  # a chart must never cost the trial that was just trained
            log.warning("could not refresh the study charts", exc_info=True)

    def stopped(self, trial: optuna.Trial, reason: str, history: list[dict]) -> None:
        """The note of a pruned or failed trial: why it stopped, and its curve so far."""
        images = []
        if self.artifact_store is not None and history:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = plots.compact_png(plots.training_curves(
                        history, Path(tmp) / "curves.png", title=f"trial {trial.number}"))
                    images.append(("curves", self._upload(trial, path)))
                except Exception:  # never cost the study a trial for a figure
                    log.warning("could not draw the curves of trial %d", trial.number,
                                exc_info=True)
        save_note(trial, stopped_note(trial.number, reason, history, images))

    def _upload(self, trial: optuna.Trial, path: Path) -> str:
        """Upload ``path`` as a trial artifact; returns the URL path a note links it by."""
        artifact_id = upload_artifact(artifact_store=self.artifact_store, file_path=str(path),
                                      study_or_trial=trial, mimetype="image/png")
        return f"/artifacts/{trial.study._study_id}/{trial._trial_id}/{artifact_id}"


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


def _figures(images: list[tuple[str, str]]) -> list[str]:
    # optuna-dashboard renders a note's images at the note's full width (its artifact list
    # only shows thumbnails): the figures come first, readable without a click.
    return [line for name, url in images for line in (f"![{name}]({url})", "")]


def stopped_note(number: int, reason: str, history: list[dict],
                 images: list[tuple[str, str]] = ()) -> str:
    """The markdown note of a pruned or failed trial."""
    last = history[-1] if history else {}
    scores = [h.get("val_graded_ap", math.nan) for h in history]
    finite = [v for v in scores if math.isfinite(v)]
    return "\n".join([f"## Trial {number}: stopped", "", f"**{reason}**", "", *_figures(images),
                       f"{len(history)} epoch(s) trained; best validation graded AUC-PR "
                       f"{_fmt(max(finite) if finite else None)}, last training loss "
                       f"{_fmt(last.get('train_loss'))}."])


def trial_note(number: int, result: TrainResult, *, portfolio: str | None = None,
               found: str | None = None, images: list[tuple[str, str]] = ()) -> str:
    """The markdown note of one finished trial (``portfolio``: the proven starting point it
    replays, and how that was ``found``; ``images``: (name, URL path) of its figures)."""
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
        *_figures(images),
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


STUDY_CHARTS = ("top_importances", "top_parallel")  # graph ids: each refresh overwrites them
TOP_PARAMS = 8
CHART_EVERY = 3  # completed trials between refreshes: importances cost a fraction of a second


def refresh_study_charts(study: optuna.Study, *, force: bool = False) -> bool:
    """Save the importance of the top :data:`TOP_PARAMS` parameters and a parallel-coordinate
    plot over them into the study for optuna-dashboard (its own plots show every one of the
    space's ~30 parameters, most at 0.00, with overlapping labels). Runs every
    :data:`CHART_EVERY` completed trials (always with ``force``); returns whether it drew."""
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if not force and (done < plots.IMPORTANCE_MIN_TRIALS or done % CHART_EVERY):
        return False
    importances, why_not = plots.param_importances(study)
    if not importances:
        log.info("no study charts yet: %s", why_not)
        return False
    top = list(importances)[:TOP_PARAMS]
    metric = study.metric_names[0] if study.metric_names else "score"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures = (vis.plot_param_importances(study, params=top, target_name=metric),
                   vis.plot_parallel_coordinate(study, params=top, target_name=metric))
    figures[0].update_layout(title=f"Importance of the {len(top)} most important parameters "
                             f"({plots.IMPORTANCE_METHOD}, {done} completed trials)")
    figures[1].update_layout(title=f"Parallel coordinates of those {len(top)} parameters")
    for graph_id, figure in zip(STUDY_CHARTS, figures, strict=True):
        save_plotly_graph_object(study, figure, graph_object_id=graph_id)
    return True


def note_of(study_or_trial: optuna.Study | optuna.Trial | optuna.trial.FrozenTrial,
            study: optuna.Study | None = None) -> str:
    """The dashboard note of a study, a live trial, or a frozen trial of ``study``."""
    if isinstance(study_or_trial, optuna.trial.FrozenTrial):
        if study is None:
            raise ValueError("a FrozenTrial needs its study")
        return get_note(optuna.Trial(study, study_or_trial._trial_id))
    return get_note(study_or_trial)


__all__ = ("FIGURES", "TrialReport", "dashboard_hook", "note_of", "refresh_study_charts",
           "render_figures", "stopped_note", "study_note", "trial_note", "worst_errors",
           "write_study_note")
