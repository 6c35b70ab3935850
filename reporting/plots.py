"""Every figure of a training run and of a study (matplotlib, headless): the small PNGs of the
dashboard, the report's figures and the notebook's."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import optuna
from optuna.trial import TrialState
from optuna.visualization import matplotlib as ovm
from PIL import Image
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from model.channels import CHANNELS

matplotlib.use("Agg")  # never needs a display
import matplotlib.pyplot as plt

DPI = 100  # ~800x350 px per figure: sharp in the dashboard, a few tens of kB each
IMPORTANCE_MIN_TRIALS = 2  # an importance needs at least two finished trials to compare
IMPORTANCE_METHOD = "PED-ANOVA"  # optuna.importance.get_param_importances' default evaluator
LABELS = {"print_error": "print error", "physical_error": "physical error",
          "no_defect": "no defect", "defect": "defect (any)"}
"""How every figure and table names the classes of ``model.PROB_NAMES``."""


def training_curves(history: Sequence[dict[str, float]], path: str | Path,
                    metric: str = "graded_ap", title: str | None = None) -> Path:
    """Loss and AUC-PR per epoch, training vs validation, with the best epoch marked."""
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=DPI)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train", ms=3)
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_ap.plot(epochs, [h["train_ap"] for h in history], "o-", ms=3,
               label="train defect AUC-PR (augmented)")
    ax_ap.plot(epochs, [h["val_defect_ap"] for h in history], "o-", ms=3,
               label="validation defect AUC-PR")
    key = f"val_{metric}"
    if metric != "defect_ap" and key in history[0]:
        ax_ap.plot(epochs, [h[key] for h in history], "s-", ms=3, label=f"validation {metric}")
    scores = [h.get(key, float("nan")) for h in history]
    finite = [(s, e) for s, e in zip(scores, epochs, strict=True) if s == s]
    if finite:
        best = max(finite)[1]
        ax_ap.axvline(best, color="grey", ls=":", lw=1, label=f"best epoch {best}")
    ax_ap.set(xlabel="epoch", ylabel="AUC-PR", ylim=(0, 1.02), title="AUC-PR")
    for ax in (ax_loss, ax_ap):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def draw_confusion(ax: plt.Axes, y_true: np.ndarray, y_pred: np.ndarray, title: str, *,
                   labels: tuple[str, str] = ("good", "defect"), fontsize: float = 10) -> None:
    """A 2x2 confusion matrix on ``ax``: counts and row shares."""
    cm = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int),
                          labels=[0, 1])
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.0f} %", ha="center",
                    va="center", fontsize=fontsize,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="labelled")
    ax.set_title(title, fontsize=9)


def operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and false-positive rate of ``s >= threshold``."""
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    return (tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1),
            int((pred & (y == 0)).sum()) / max(int((y == 0).sum()), 1))


def draw_pr(ax: plt.Axes, y_true: np.ndarray, scores: np.ndarray, threshold: float,
            title: str, *, legend_size: float = 7) -> None:
    """Precision-recall curve on ``ax`` with AUC-PR, the positive rate and the operating
    point."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    if 0 < y.sum() < len(y):
        precision, recall, _ = precision_recall_curve(y, s)
        ax.step(recall, precision, where="post",
                label=f"AUC-PR {average_precision_score(y, s):.3f}")
        p_at, r_at, _ = operating_point(y, s, threshold)
        ax.plot([r_at], [p_at], "o", color="crimson",
                label=f"threshold {threshold:.2f}: P {p_at:.2f}, R {r_at:.2f}")
    else:
        ax.text(0.5, 0.5, "one class only", ha="center", transform=ax.transAxes)
    ax.axhline(y.mean() if len(y) else 0, color="grey", ls=":", lw=1, label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower left")


def draw_roc(ax: plt.Axes, y_true: np.ndarray, scores: np.ndarray, threshold: float,
             title: str, *, legend_size: float = 7) -> None:
    """ROC curve on ``ax`` with AUROC, chance and the operating point."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(y, s):.3f}")
        _, r_at, fpr_at = operating_point(y, s, threshold)
        ax.plot([fpr_at], [r_at], "o", color="crimson",
                label=f"t={threshold:.2f}: TPR {r_at:.2f}, FPR {fpr_at:.2f}")
    else:
        ax.text(0.5, 0.5, "one class only", ha="center", transform=ax.transAxes)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)",
           xlim=(0, 1.01), ylim=(0, 1.02))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right")


def confusion_matrix_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path,
                          title: str = "Defect at the chosen threshold",
                          labels: tuple[str, str] = ("good", "defect")) -> Path:
    """2x2 confusion matrix with counts and row shares, as a file."""
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=DPI)
    draw_confusion(ax, y_true, y_pred, title, labels=labels)
    return _save(fig, path)


def pr_curve_plot(y_true: np.ndarray, scores: np.ndarray, threshold: float, path: str | Path,
                  title: str = "Precision-recall (defect)") -> Path:
    """Precision-recall curve with AUC-PR, the positive rate and the operating point."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=DPI)
    draw_pr(ax, y_true, scores, threshold, title)
    return _save(fig, path)


def error_grid(images: np.ndarray, ids: Sequence[str], probs: Sequence[float],
               path: str | Path, title: str, channels: Sequence[str] = CHANNELS) -> Path:
    """One row per eraser, one column per channel, labelled with its id and probability.

    ``images``: uint8 ``(n, 6, S, S)``, shown at one screen pixel per image pixel. Shows a
    note when ``n`` is 0. The erasers are tiled into one mosaic drawn by a single ``imshow``
    (an axes per tile cost ~20x more to draw, and this runs after every trial).
    """
    n, cols = len(ids), len(channels)
    size = images.shape[-1] if n else 32
    gap = max(2, size // 24)
    step = size + gap
    mosaic = np.full((max(n, 1) * step - gap, cols * step - gap), 255, np.uint8)
    for r in range(n):
        for c in range(cols):
            mosaic[r * step:r * step + size, c * step:c * step + size] = images[r, c]
    # Small tiles are enlarged to >= 64 screen px (channel names must fit under the title);
    # room around the mosaic: 110 px left (id, p), 60 px on top (title, channel names).
    zoom = max(1.0, 64 * cols / mosaic.shape[1])
    w, h = mosaic.shape[1] * zoom, mosaic.shape[0] * zoom
    fig_w = max(w + 130, 110 + 6.5 * len(title))  # the title is left-aligned over the mosaic
    fig = plt.figure(figsize=(fig_w / DPI, (h + 70) / DPI), dpi=DPI)
    ax = fig.add_axes((110 / fig_w, 10 / (h + 70), w / fig_w, h / (h + 70)))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_frame_on(False)
    ax.xaxis.tick_top()
    ax.set_xticks([c * step + size / 2 for c in range(cols)], list(channels), fontsize=7)
    ax.set_yticks([r * step + size / 2 for r in range(n)],
                  [f"{ids[r]}\np={probs[r]:.2f}" for r in range(n)], fontsize=7)
    ax.tick_params(length=0)
    if n == 0:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(title, fontsize=9, loc="left")
    return _save(fig, path, tight=False)


def _save(fig: plt.Figure, path: str | Path, *, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def compact_png(path: str | Path, colors: int = 256) -> Path:
    """Rewrite a PNG in place, smaller: 8-bit greyscale when every pixel is grey (error grids:
    exact, about half the bytes), else an adaptive palette (charts: about a third)."""
    path = Path(path)
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        small = Image.fromarray(np.ascontiguousarray(rgb[..., 0]))  # uint8 2-D: mode L
    else:
        # fast octree: a few ms per chart and smaller files than median cut on flat colours
        small = Image.fromarray(rgb).quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    small.save(path)  # optimize=True would cost 2-3x the time for ~10 % fewer bytes
    return path


# ---------------------------------------------------------------------------------------------
# the study: Optuna's own plots (matplotlib flavour), set up alike for the report and notebook


def _optuna_figure(ax) -> plt.Figure:
    fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
    fig.set_dpi(DPI)
    return fig


@contextlib.contextmanager
def _optuna_style():
    # Optuna's plots switch matplotlib to its ggplot style; rc_context keeps that to them.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def history_figure(study: optuna.Study, metric: str) -> plt.Figure:
    """Validation ``metric`` per completed trial and the best so far."""
    with _optuna_style():
        ax = ovm.plot_optimization_history(study, target_name=f"validation {metric}")
    ax.set_title("Optimisation history")
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"validation {metric}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig = _optuna_figure(ax)
    fig.set_size_inches(7, 4)
    return fig


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's parameter importances (its default evaluator, :data:`IMPORTANCE_METHOD`), or
    ``None`` and why not."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < IMPORTANCE_MIN_TRIALS:
        return None, (f"they need at least {IMPORTANCE_MIN_TRIALS} completed trials (the "
                      f"study has {len(done)}).")
    try:
        with warnings.catch_warnings():  # "few trials per regime": true, and said
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study), None
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return None, str(exc)


def importance_figure(importances: dict[str, float], metric: str) -> plt.Figure:
    """Horizontal bars, the most important parameter on top."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(importances) + 1.2), dpi=DPI)
    names = list(importances)[::-1]
    ax.barh(names, [importances[k] for k in names], color="tab:blue")
    ax.set(xlabel=f"importance ({IMPORTANCE_METHOD}, Optuna's default; sums to 1)",
           title=f"Parameter importances for validation {metric}")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return fig


def parallel_figure(study: optuna.Study, params: list[str], metric: str) -> plt.Figure:
    """Parallel coordinates over ``params``, one line per completed trial."""
    with _optuna_style():
        ax = ovm.plot_parallel_coordinate(study, params=params,
                                          target_name=f"validation {metric}")
    ax.set_title(f"Parallel coordinates of the {len(params)} most important parameters")
    fig = _optuna_figure(ax)
    fig.set_size_inches(max(7, 1.1 * len(params) + 2), 4.2)
    return fig


def intermediate_figure(study: optuna.Study, metric: str) -> plt.Figure | None:
    """Every trial's per-epoch validation score (pruned ones stop early); ``None`` before
    any trial reported one."""
    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return None
    with _optuna_style():
        ax = ovm.plot_intermediate_values(study)
    ax.set_title("Learning curves of all trials (pruned ones stop early)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig = _optuna_figure(ax)
    fig.set_size_inches(7, 4)
    return fig
