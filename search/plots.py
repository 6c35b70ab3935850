"""Figures of a training run (matplotlib, headless): small PNGs for the dashboard and reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from data.channels import CHANNELS

matplotlib.use("Agg")  # never needs a display
import matplotlib.pyplot as plt

DPI = 100  # ~800x350 px per figure: sharp in the dashboard, a few tens of kB each


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


def confusion_matrix_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path,
                          title: str = "Defect at the chosen threshold",
                          labels: tuple[str, str] = ("good", "defect")) -> Path:
    """2x2 confusion matrix with counts and row shares."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int),
                          labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=DPI)
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.0f} %", ha="center",
                    va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="labelled", title=title)
    ax.title.set_fontsize(9)
    return _save(fig, path)


def pr_curve_plot(y_true: np.ndarray, scores: np.ndarray, threshold: float, path: str | Path,
                  title: str = "Precision-recall (defect)") -> Path:
    """Precision-recall curve with AUC-PR, the positive rate and the operating point."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=DPI)
    if 0 < y.sum() < len(y):
        precision, recall, _ = precision_recall_curve(y, s)
        ax.step(recall, precision, where="post",
                label=f"AUC-PR {average_precision_score(y, s):.3f}")
        pred = s >= threshold
        tp = int((pred & (y == 1)).sum())
        p_at = tp / max(int(pred.sum()), 1)
        r_at = tp / max(int(y.sum()), 1)
        ax.plot([r_at], [p_at], "o", color="crimson",
                label=f"threshold {threshold:.2f}: P {p_at:.2f}, R {r_at:.2f}")
    ax.axhline(y.mean() if len(y) else 0, color="grey", ls=":", lw=1, label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
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
    from PIL import Image

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
