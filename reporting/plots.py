"""Every figure of a training run and of a study (matplotlib, headless): the small PNGs of the
dashboard, the report's figures and the notebook's.

Two kinds of callers. The dashboard's figures (:func:`training_curves`,
:func:`confusion_matrix_plot`, :func:`pr_curve_plot`, :func:`error_grid`) are files of a
fixed pixel size. Everything else returns a :class:`~matplotlib.figure.Figure` sized in
inches and drawn with the text sizes of the style it is drawn in: the report draws every
figure inside :func:`figure_style` (:data:`STYLES`: ``paper`` for a two-column paper, 8 pt at
3.3 or 7 inches; ``slides``), so one context gives every figure the same fonts, lines and
white background.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import optuna
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from optuna.trial import TrialState
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
CLASSES = tuple(LABELS)
SAVE_DPI = 300  # the report's PNGs: print resolution


# ---------------------------------------------------------------------------------------------
# one style for every figure of a report


@dataclass(frozen=True)
class FigureStyle:
    """The sizes and text of one medium's figures.

    ``single`` and ``double`` are the widths (inches) a figure is drawn at and meant to be
    shown at: one column or the full width of the page (of the slide). ``font`` is the size
    of all text at that width (``legend``: of legends, where smaller), so that nothing reads
    smaller when the figure is included unscaled. ``max_height`` caps tall figures (image
    grids, 2 x 2 panels) to the page or slide.
    """

    name: str
    single: float
    double: float
    max_height: float
    font: float
    line: float
    legend: float | None = None  # legends' text, if smaller than ``font`` (never below 8 pt)

    def size(self, width: str, aspect: float) -> tuple[float, float]:
        """``(width, height)`` in inches of a ``'single'`` or ``'double'`` figure whose
        height is ``aspect`` times its width (capped at :attr:`max_height`)."""
        w = self.single if width == "single" else self.double
        return w, min(w * aspect, self.max_height)

    def rc(self) -> dict:
        f = self.font
        return {
            "font.size": f, "axes.titlesize": f, "axes.labelsize": f, "xtick.labelsize": f,
            "ytick.labelsize": f, "legend.fontsize": self.legend or f,
            "legend.title_fontsize": self.legend or f,
            "figure.titlesize": f, "figure.labelsize": f,
            "figure.facecolor": "white", "axes.facecolor": "white",
            "savefig.facecolor": "white", "axes.edgecolor": "0.25", "axes.linewidth": 0.8,
            "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
            "grid.alpha": 0.3, "grid.linewidth": 0.6, "lines.linewidth": self.line,
            "lines.markersize": 2.5 * self.line + 1, "legend.frameon": False,
            "legend.handlelength": 1.6, "savefig.dpi": SAVE_DPI, "figure.dpi": DPI,
            "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: text stays text
        }


STYLES: dict[str, FigureStyle] = {
    "paper": FigureStyle("paper", single=3.3, double=7.0, max_height=8.5, font=8, line=1.1),
    "slides": FigureStyle("slides", single=5.0, double=10.0, max_height=5.6, font=14,
                          line=2.0, legend=11),
}
"""``paper``: a two-column paper's column (3.3 in) and page width (7 in), 8 pt text.
``slides``: a 16:9 slide (10 x 5.6 in) or half of one (5 in), 14 pt text, 11 pt legends."""


@contextlib.contextmanager
def figure_style(style: str | FigureStyle = "paper") -> Iterator[FigureStyle]:
    """Draw (and save) figures in ``style``: matplotlib's defaults plus the style's text,
    lines and white background; everything else (user rc files, Optuna's ggplot) is kept
    out. Yields the :class:`FigureStyle`."""
    s = STYLES[style] if isinstance(style, str) else style
    with plt.style.context("default"), matplotlib.rc_context(s.rc()):
        yield s


def _points(size: str | float) -> float:
    """An rc font size ('medium', 8...) in points."""
    return FontProperties(size=size).get_size_in_points()


# ---------------------------------------------------------------------------------------------
# one training run (the dashboard's files and the report's figures)


def draw_curves(ax_loss: plt.Axes, ax_ap: plt.Axes, history: Sequence[dict[str, float]],
                metric: str = "graded_ap") -> None:
    """Loss and AUC-PR per epoch, training vs validation, with the best epoch marked."""
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train", ms=3)
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss")
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
    ax_ap.set(xlabel="epoch", ylabel="AUC-PR", ylim=(0, 1.02))
    for ax in (ax_loss, ax_ap):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()


def training_curves(history: Sequence[dict[str, float]], path: str | Path,
                    metric: str = "graded_ap", title: str | None = None) -> Path:
    """The dashboard's curves file: :func:`draw_curves` at 800x350 px."""
    with matplotlib.rc_context({"legend.fontsize": 7}):
        fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=DPI)
        draw_curves(ax_loss, ax_ap, history, metric)
        ax_loss.set_title("Loss")
        ax_ap.set_title("AUC-PR")
        if title:
            fig.suptitle(title, fontsize=9)
        return _save(fig, path)


def curves_figure(history: Sequence[dict[str, float]], metric: str,
                  size: tuple[float, float]) -> plt.Figure:
    """:func:`draw_curves` as a figure of ``size`` inches in the current style."""
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=size, layout="constrained")
    draw_curves(ax_loss, ax_ap, history, metric)
    return fig


def draw_confusion_matrix(ax: plt.Axes, cm: np.ndarray, labels: Sequence[str], *,
                          xlabel: str = "predicted", ylabel: str = "labelled",
                          fontsize: float | None = None) -> None:
    """A square confusion matrix (rows: labelled, columns: predicted) on ``ax``: counts and
    row shares in every cell, shaded by the row share (a rare class reads as well as a
    common one)."""
    cm = np.asarray(cm)
    share = cm / cm.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.0f} %", ha="center",
                    va="center", fontsize=fontsize,
                    color="white" if share[i, j] > 0.6 else "black")
    ticks = list(range(len(labels)))
    ax.set(xticks=ticks, yticks=ticks, xlabel=xlabel, ylabel=ylabel)
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)


def draw_confusion(ax: plt.Axes, y_true: np.ndarray, y_pred: np.ndarray, title: str, *,
                   labels: tuple[str, str] = ("good", "defect"),
                   fontsize: float | None = None) -> None:
    """A 2x2 confusion matrix of one class on ``ax``: counts and row shares."""
    cm = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int),
                          labels=[0, 1])
    draw_confusion_matrix(ax, cm, labels, fontsize=fontsize)
    ax.set_title(title)


def operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and false-positive rate of ``s >= threshold``."""
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    return (tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1),
            int((pred & (y == 0)).sum()) / max(int((y == 0).sum()), 1))


def draw_pr(ax: plt.Axes, y_true: np.ndarray, scores: np.ndarray, threshold: float,
            title: str, *, legend_size: float | None = None) -> None:
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
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower left")


def draw_roc(ax: plt.Axes, y_true: np.ndarray, scores: np.ndarray, threshold: float,
             title: str, *, legend_size: float | None = None) -> None:
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
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right")


def draw_sweep(ax: plt.Axes, y_true: np.ndarray, scores: np.ndarray, threshold: float,
               title: str) -> None:
    """Precision, recall and F1 against the decision threshold, the chosen one dashed."""
    grid = np.linspace(0.01, 0.99, 99)
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=float)
    pred = s[None, :] >= grid[:, None]
    tp = (pred & y).sum(axis=1)
    flagged = pred.sum(axis=1)
    precision = np.where(flagged > 0, tp / np.maximum(flagged, 1), np.nan)
    recall = tp / max(int(y.sum()), 1)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    ax.plot(grid, precision, label="precision")
    ax.plot(grid, recall, label="recall")
    ax.plot(grid, f1, label="F1", lw=1.8 * matplotlib.rcParams["lines.linewidth"])
    ax.axvline(threshold, color="crimson", ls="--", lw=1, label=f"chosen {threshold:.2f}")
    ax.set(xlabel="decision threshold on p", ylabel="score", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title)
    ax.grid(alpha=0.3)


def class_panels(kind: str, truth: np.ndarray, probs: np.ndarray,
                 thresholds: Mapping[str, float], size: tuple[float, float]) -> plt.Figure:
    """One panel per class of ``model.PROB_NAMES`` (2 x 2): ``kind`` ``confusion`` (at the
    thresholds), ``pr`` or ``roc`` (with the operating point) or ``sweep`` (precision, recall
    and F1 against the threshold). ``truth`` and ``probs`` are ``(N, 4)``. Panel titles name
    the class; a caption says the rest."""
    if kind not in ("confusion", "pr", "roc", "sweep"):
        raise ValueError(f"unknown kind {kind!r}")
    fig, axes = plt.subplots(2, 2, figsize=size, layout="constrained")
    for j, (ax, name) in enumerate(zip(axes.ravel(), CLASSES, strict=True)):
        thr = float(thresholds.get(name, 0.5))
        y, s = truth[:, j], probs[:, j]
        if kind == "confusion":
            draw_confusion(ax, y, s >= thr, f"{LABELS[name]} (threshold {thr:.2f})",
                           labels=("no", "yes"))
        elif kind == "pr":
            draw_pr(ax, y, s, thr, LABELS[name])
        elif kind == "roc":
            draw_roc(ax, y, s, thr, LABELS[name])
        else:
            draw_sweep(ax, y, s, thr, LABELS[name])
    if kind == "sweep":
        axes[0, 0].legend(loc="lower left")
    return fig


def xy_confusion_figure(cm: np.ndarray, codes: Sequence[str], size: tuple[float, float],
                        names: Mapping[str, str] | None = None) -> plt.Figure:
    """The ``X_Y`` classes' confusion matrix (labelled rows, predicted columns); ``names``
    (code -> name) go under the row labels."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    draw_confusion_matrix(ax, cm, codes, xlabel="predicted X_Y", ylabel="labelled X_Y")
    if names:
        ax.set_yticklabels([_named(c, names) for c in codes])
    return fig


def _named(code: str, names: Mapping[str, str]) -> str:
    """A class code with its name wrapped under it (a tick label)."""
    name = names.get(code, code)
    return code if name == code else f"{code}\n{textwrap.fill(name, 9)}"


def balance_figure(counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, str],
                   size: tuple[float, float]) -> plt.Figure:
    """Grouped bars: the share of each class (``labels``: class -> its name) in each part
    of the data (``counts``: part -> class -> erasers; the legend gives each part's size)."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    classes = list(labels)
    width = 0.8 / max(len(counts), 1)
    x = np.arange(len(classes))
    for i, (part, c) in enumerate(counts.items()):
        n = max(sum(c.values()), 1)
        ax.bar(x + (i - (len(counts) - 1) / 2) * width,
               [100 * c.get(k, 0) / n for k in classes], width, label=f"{part} ({n})")
    ax.set_xticks(x, [_named(k, labels) for k in classes])
    ax.set_ylabel("share of erasers (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------
# erasers: rows of images, one column per channel


def mosaic(tiles: np.ndarray, gap: int = 2, fill: float = np.nan) -> np.ndarray:
    """``(rows, cols, H, W)`` tiles -> one ``(rows*(H+gap)-gap, cols*(W+gap)-gap)`` image
    with ``fill`` between them (NaN: a float image whose gaps a colormap can paint).

    One ``imshow`` of a mosaic draws in a fraction of the time of rows x cols axes.
    """
    rows, cols, h, w = tiles.shape
    dtype = np.result_type(tiles.dtype, np.float64 if np.isnan(fill) else
                           np.min_scalar_type(fill))
    out = np.full((max(rows * (h + gap) - gap, 0), max(cols * (w + gap) - gap, 0)), fill,
                  dtype=dtype)
    for r in range(rows):
        for c in range(cols):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[r, c]
    return out


def channel_grid(images: np.ndarray, row_labels: Sequence[str], *, width: float,
                 max_height: float = 9.0, channels: Sequence[str] = CHANNELS,
                 title: str | None = None, cmap: str = "gray", vmin: float = 0,
                 vmax: float = 255, colorbar: str | None = None) -> plt.Figure:
    """Erasers as rows, their channels as columns (named on top), each row labelled on the
    left (lines of ``row_labels``), as one mosaic drawn by a single ``imshow``.

    ``images``: ``(n, len(channels), S, S)``, any numbers between ``vmin`` and ``vmax``
    (uint8 grey levels by default; a diverging ``cmap`` and a ``colorbar`` label for
    differences). The figure is ``width`` inches wide and as tall as its rows need (at most
    ``max_height``, then the tiles shrink); text is the current style's. The sample grids,
    label-noise examples, augmentation draws and worst errors of the report all come from
    here; ``n`` = 0 draws a note instead.
    """
    images = np.asarray(images)
    n, cols = len(row_labels), len(channels)
    font = _points(matplotlib.rcParams["ytick.labelsize"]) / 72  # inches per em
    lines = [line for label in row_labels for line in str(label).splitlines()] or [""]
    label_w = 0.6 * font * max(len(line) for line in lines) + 0.12
    top = 1.5 * font * (2 if title else 1) + 0.06
    right = 1.0 if colorbar else 0.05
    size = images.shape[-1] if n else 1
    gap = max(1, size // 40)
    inch = (width - label_w - right) / (cols * (size + gap) - gap)  # inches per image pixel
    rows_h = max(n, 1) * (size + gap) - gap
    height = top + inch * rows_h + 0.06
    if height > max_height:  # narrower tiles, centred under the same width
        inch = (max_height - top - 0.06) / rows_h
        height = max_height
    grid_w, grid_h = inch * (cols * (size + gap) - gap), inch * rows_h
    left = label_w + (width - label_w - right - grid_w) / 2
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, 0.06 / height, grid_w / width, grid_h / height))
    colours = plt.get_cmap(cmap).with_extremes(bad="white")  # the gaps between tiles
    if n:
        tiles = images.reshape(n, cols, size, size).astype(np.float64)
        im = ax.imshow(mosaic(tiles, gap), cmap=colours, vmin=vmin, vmax=vmax,
                       interpolation="nearest", aspect="equal")
        ax.set_xticks([c * (size + gap) + size / 2 for c in range(cols)], list(channels))
        ax.set_yticks([r * (size + gap) + size / 2 for r in range(n)], list(row_labels))
        if colorbar:
            cax = fig.add_axes(((left + grid_w + 0.12) / width, 0.06 / height, 0.1 / width,
                                grid_h / height))
            fig.colorbar(im, cax=cax, label=colorbar)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center")
    ax.xaxis.tick_top()
    ax.tick_params(length=0, pad=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, loc="left")
    return fig


def error_grid(images: np.ndarray, ids: Sequence[str], probs: Sequence[float],
               path: str | Path, title: str, channels: Sequence[str] = CHANNELS) -> Path:
    """The dashboard's file of erasers: one row per eraser, one column per channel, labelled
    with its id and probability.

    ``images``: uint8 ``(n, 6, S, S)``, shown at one screen pixel per image pixel. Shows a
    note when ``n`` is 0. The erasers are tiled into one :func:`mosaic` drawn by a single
    ``imshow`` (an axes per tile cost ~20x more to draw, and this runs after every trial).
    """
    n, cols = len(ids), len(channels)
    size = images.shape[-1] if n else 32
    gap = max(2, size // 24)
    tiles = np.asarray(images[:n]) if n else np.zeros((1, cols, size, size), np.uint8)
    grid = mosaic(tiles, gap, fill=255)
    if not n:
        grid[:] = 255
    step = size + gap
    # Small tiles are enlarged to >= 64 screen px (channel names must fit under the title);
    # room around the mosaic: 110 px left (id, p), 60 px on top (title, channel names).
    zoom = max(1.0, 64 * cols / grid.shape[1])
    w, h = grid.shape[1] * zoom, grid.shape[0] * zoom
    fig_w = max(w + 130, 110 + 6.5 * len(title))  # the title is left-aligned over the mosaic
    fig = plt.figure(figsize=(fig_w / DPI, (h + 70) / DPI), dpi=DPI)
    ax = fig.add_axes((110 / fig_w, 10 / (h + 70), w / fig_w, h / (h + 70)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
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


def confusion_matrix_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path,
                          title: str = "Defect at the chosen threshold",
                          labels: tuple[str, str] = ("good", "defect")) -> Path:
    """The dashboard's 2x2 confusion matrix file (counts and row shares)."""
    with matplotlib.rc_context({"axes.titlesize": 9}):
        fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=DPI)
        draw_confusion(ax, y_true, y_pred, title, labels=labels)
        return _save(fig, path)


def pr_curve_plot(y_true: np.ndarray, scores: np.ndarray, threshold: float, path: str | Path,
                  title: str = "Precision-recall (defect)") -> Path:
    """The dashboard's precision-recall file, with AUC-PR, the positive rate and the
    operating point."""
    with matplotlib.rc_context({"axes.titlesize": 9, "legend.fontsize": 7}):
        fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=DPI)
        draw_pr(ax, y_true, scores, threshold, title)
        return _save(fig, path)


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
# the study: drawn here rather than by optuna.visualization.matplotlib, whose figures come in
# its own grey ggplot style and put parallel-coordinate ticks on the lines


def _maximise(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def history_figure(study: optuna.Study, metric: str, size: tuple[float, float] = (7, 4), *,
                   titled: bool = True) -> plt.Figure:
    """Validation ``metric`` per completed trial, the best so far, and where each pruned
    trial stood when it was stopped."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.plot([t.number for t in pruned],
                [t.intermediate_values[max(t.intermediate_values)] for t in pruned], "x",
                color="0.55", label="pruned (score when stopped)")
    if done:
        numbers = [t.number for t in done]
        values = np.array([t.value for t in done], dtype=float)
        best = (np.maximum if _maximise(study) else np.minimum).accumulate(values)
        ax.plot(numbers, values, "o", color="tab:blue", label="completed trial")
        ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    else:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", transform=ax.transAxes)
    ax.set(xlabel="trial", ylabel=f"validation {metric}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if titled:
        ax.set_title("Optimisation history")
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


def importance_figure(importances: dict[str, float], metric: str,
                      size: tuple[float, float] | None = None, *, top: int | None = None,
                      titled: bool = True) -> plt.Figure:
    """Horizontal bars of the ``top`` most important parameters (all by default), the most
    important on top, each with its value (the importances of all parameters sum to 1)."""
    names = list(importances)[:top][::-1]
    size = size or (6, 0.3 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    bars = ax.barh(names, [importances[k] for k in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=2)
    ax.set_xlabel(f"importance ({IMPORTANCE_METHOD})")
    ax.set_xlim(0, max([importances[k] for k in names] + [1e-9]) * 1.2)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", alpha=0.3)
    if titled:
        ax.set_title(f"Parameter importances for validation {metric}")
    return fig


def _axis(study_trials: list, name: str) -> tuple[list[float], list[tuple[float, str]]]:
    """A parameter's values on a parallel-coordinate axis (0..1, NaN where a trial has no
    such parameter) and its ticks ``(position, label)``."""
    dist = next(t.distributions[name] for t in study_trials if name in t.distributions)
    values = [t.params.get(name) for t in study_trials]
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = list(dist.choices)
        pos = {c: (i / (len(choices) - 1) if len(choices) > 1 else 0.5)
               for i, c in enumerate(choices)}
        ticks = [(pos[c], _short(str(c))) for c in choices]
        return [pos[v] if name in t.params else math.nan
                for v, t in zip(values, study_trials, strict=True)], ticks
    log = bool(getattr(dist, "log", False))
    f = math.log10 if log else float
    lo, hi = f(dist.low), f(dist.high)
    span = hi - lo

    def at(v: float) -> float:
        return (f(v) - lo) / span if span else 0.5

    mid = 10 ** ((lo + hi) / 2) if log else (dist.low + dist.high) / 2
    ticks = [(at(v), f"{v:.3g}") for v in (dist.low, mid, dist.high)] if span else \
        [(0.5, f"{dist.low:.3g}")]
    return [at(v) if v is not None else math.nan for v in values], ticks


def _short(text: str, n: int = 12) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def parallel_figure(study: optuna.Study, params: list[str], metric: str,
                    size: tuple[float, float] | None = None, *,
                    titled: bool = True) -> plt.Figure:
    """Parallel coordinates over the study's score and ``params``: one line per completed
    trial, coloured by its score, the best one in red. Numeric axes span the parameter's
    search range (log where it was searched on a log scale), categorical ones its choices; a
    line breaks at a parameter its trial did not have. Raises ``ValueError`` with fewer than
    two completed trials."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None]
    params = [p for p in params if any(p in t.distributions for t in done)]
    if len(done) < 2 or not params:
        raise ValueError("parallel coordinates need two completed trials with parameters")
    values = np.array([t.value for t in done], dtype=float)
    lo, hi = float(values.min()), float(values.max())
    columns = [[(v - lo) / (hi - lo) if hi > lo else 0.5 for v in values]]
    ticks = [[(0.0, f"{lo:.3f}"), (1.0, f"{hi:.3f}")] if hi > lo else [(0.5, f"{lo:.3f}")]]
    for p in params:
        col, tk = _axis(done, p)
        columns.append(col)
        ticks.append(tk)
    ys = np.array(columns).T  # (trials, axes)
    x = np.arange(ys.shape[1])
    size = size or (max(7.0, 1.1 * len(params) + 2), 4.2)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    cmap, norm = plt.get_cmap("viridis"), matplotlib.colors.Normalize(lo, hi)
    order = np.argsort(values if _maximise(study) else -values)  # the best drawn last
    lw = matplotlib.rcParams["lines.linewidth"]
    for i in order[:-1]:
        ax.plot(x, ys[i], color=cmap(norm(values[i])), lw=0.8 * lw, alpha=0.75)
    best = order[-1]
    ax.plot(x, ys[best], color="crimson", lw=1.8 * lw, label=f"best trial {done[best].number}")
    ax.vlines(x, 0, 1, color="0.3", lw=0.8, zorder=3)
    for i, tk in enumerate(ticks):
        for pos, label in tk:  # on a white box left of its axis: readable over the lines
            ax.text(i - 0.04, pos, label, ha="right", va="center", zorder=4,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.85})
    ax.set_xticks(x, [f"validation {metric}", *params], rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(x) - 0.9)
    ax.set_ylim(-0.04, 1.04)
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=0)
    ax.legend(loc="upper left", bbox_to_anchor=(0, 1.12), borderaxespad=0)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01,
                 label=f"validation {metric}")
    if titled:
        ax.set_title(f"Parallel coordinates of the {len(params)} most important parameters",
                     pad=18)
    return fig


def intermediate_figure(study: optuna.Study, metric: str,
                        size: tuple[float, float] = (7, 4), *,
                        titled: bool = True) -> plt.Figure | None:
    """Every trial's intermediate values per epoch (the best validation score so far, what
    the pruner compares): completed trials, pruned ones (they stop early) and the best one;
    ``None`` before any trial reported one."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    colour = {TrialState.COMPLETE: "tab:blue", TrialState.PRUNED: "tab:orange"}
    try:
        best = study.best_trial.number
    except ValueError:
        best = None
    lw = matplotlib.rcParams["lines.linewidth"]
    for t in trials:
        steps = sorted(t.intermediate_values)
        is_best = t.number == best
        ax.plot(steps, [t.intermediate_values[s] for s in steps],
                color="black" if is_best else colour.get(t.state, "0.6"),
                lw=1.6 * lw if is_best else 0.8 * lw, alpha=1.0 if is_best else 0.7,
                zorder=3 if is_best else 2)
    states = {t.state for t in trials}
    handles = [Line2D([], [], color=colour[s], label=s.name.lower())
               for s in (TrialState.COMPLETE, TrialState.PRUNED) if s in states]
    if states - set(colour):
        handles.append(Line2D([], [], color="0.6", label="running or failed"))
    if best is not None:
        handles.append(Line2D([], [], color="black", lw=1.6 * lw, label=f"best trial {best}"))
    ax.legend(handles=handles, loc="lower right")
    ax.set(xlabel="epoch", ylabel=f"best validation {metric} so far")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if titled:
        ax.set_title("Learning curves of all trials (pruned ones stop early)")
    return fig
