"""Figures of a training run (matplotlib, headless): small PNGs for the dashboard and reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
