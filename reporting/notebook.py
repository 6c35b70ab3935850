"""The notebook front end's few helpers (``notebooks/quickstart.ipynb``): figures shown inline,
the dashboard shown in a cell (its progress bars are ``reporting.progress``'s, the command's).

Front-end code: it displays figures; the work itself is done by the same functions the
commands call.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import torch
from matplotlib.figure import Figure
from optuna.trial import TrialState

from data import EraserSet
from data.synth import generate
from model import PROB_NAMES, InspectionModel
from reporting import plots
from reporting.dashboard import study_path
from training.scoring import predict_set, score

log = logging.getLogger(__name__)

DPI = 100


class StepFailed(Exception):
    """A notebook step that cannot go on, shown as its message alone.

    IPython renders an exception through its ``_render_traceback_`` when it has one, so the
    cell shows what the command would print (what is wrong, what to do) instead of a
    traceback into the library, and running all cells still stops at this one.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"Stopped: {self}"]


# --- keeping the work on Google Drive ----------------------------------------------------

class FolderMirror:
    """Keeps a copy of the notebook's work folder (study database, artifacts, exports,
    reports) in ``keep``, a Google Drive folder on Colab, so a recycled runtime loses nothing.

    The study's SQLite file itself stays on the runtime's own disk: SQLite's locking is not
    reliable on a synced folder, and a copy taken mid-write can be torn. :meth:`save` copies
    it with SQLite's online backup (consistent even while a trial writes) and every other
    file that is new or changed; :meth:`restore` brings a kept copy back into an empty work
    folder on a fresh runtime. As an Optuna callback it saves after every trial.
    """

    def __init__(self, work: str | Path, keep: str | Path, database: str = "studies.db"):
        self.work, self.keep, self.database = Path(work), Path(keep), database

    def restore(self) -> bool:
        """Copy the kept folder into ``work`` when ``work`` has no study database yet;
        returns whether it did."""
        if (self.work / self.database).exists() or not (self.keep / self.database).exists():
            return False
        shutil.copytree(self.keep, self.work, dirs_exist_ok=True)
        log.info("restored %s from %s", self.work, self.keep)
        return True

    def save(self) -> None:
        """Copy the work folder into ``keep`` (the database through SQLite's backup)."""
        self.keep.mkdir(parents=True, exist_ok=True)
        db = self.work / self.database
        for path in sorted(self.work.rglob("*")):
            rel = path.relative_to(self.work)
            target = self.keep / rel
            if path == db or rel.parts[0] == "demo_data" or not path.is_file():
                continue  # the database below; synthetic data are remade in seconds
            if (target.exists() and target.stat().st_size == path.stat().st_size
                    and target.stat().st_mtime >= path.stat().st_mtime):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if db.exists():
            tmp = self.keep / f".{self.database}.partial"
            tmp.unlink(missing_ok=True)
            src, dst = sqlite3.connect(db), sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            os.replace(tmp, self.keep / self.database)  # never a half-written copy

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.save()

    def after(self, callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
              ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
        """A trial callback that runs ``callback``, then saves."""
        def both(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            callback(study, trial)
            self.save()
        return both


# --- data ---------------------------------------------------------------------------------

def synthetic_set(folder: str | Path, *, n: int, seed: int, size: int = 310,
                  subtle_rate: float | None = None) -> Path:
    """A synthetic MILAN delivery in ``folder``, made once: reused while it holds ``n``
    erasers of ``size`` px, remade otherwise (settings changed, or an interrupted run: the
    label files are written last)."""
    folder = Path(folder)
    labels = folder / "labels_multiclass.csv"
    if labels.exists():
        with labels.open(newline="") as f:
            rows = sum(1 for _ in csv.reader(f)) - 1
        first = next((folder / "arrays").glob("*.npy"), None)
        if rows == n and first is not None and np.load(first, mmap_mode="r").shape[0] == size:
            return folder
    generate(folder, n=n, seed=seed, size=size, subtle_rate=subtle_rate, force=True)
    return folder


def heldout_figures(net: InspectionModel, data: EraserSet, out_dir: str | Path, *,
                    device: str | torch.device | None = None) -> tuple[dict[str, float],
                                                                      list[Path]]:
    """Score ``net`` on labelled erasers it never saw, at its stored thresholds; returns the
    metrics (``training.scoring.score``) and PNGs of the *defect* PR curve and confusion
    matrix."""
    probs = predict_set(net, data, device=device)
    metrics = score(net, probs, data.targets)
    p_defect = probs[:, PROB_NAMES.index("defect")]
    threshold = net.thresholds["defect"]
    out = Path(out_dir)
    return metrics, [
        plots.pr_curve_plot(data.defect, p_defect, threshold, out / "heldout_pr.png",
                            "Held-out erasers: defect"),
        plots.confusion_matrix_plot(data.defect, p_defect >= threshold,
                                    out / "heldout_confusion.png",
                                    f"Held-out erasers: defect at threshold {threshold:.2f}"),
    ]


# --- figures ------------------------------------------------------------------------------

def study_figures(study: optuna.Study) -> dict[str, Figure]:
    """The report's study figures (``reporting.plots``): optimisation history, parameter
    importances (Optuna's default evaluator, PED-ANOVA) and intermediate values (per-epoch
    validation scores, where pruning cut trials). Figures with nothing to show yet are left
    out: all before a trial completes, importances before two have."""
    metric = study.user_attrs.get("space", {}).get("metric", "score")
    out: dict[str, Figure] = {}
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        out["history"] = plots.history_figure(study, metric)
    importances, why_not = plots.param_importances(study)
    if importances:
        out["importances"] = plots.importance_figure(importances, metric)
    else:
        log.info("no importance plot yet: %s", why_not)
    intermediate = plots.intermediate_figure(study, metric)
    if intermediate is not None:
        out["intermediate values"] = intermediate
    return out


def show(item: Figure | object | str | Path) -> None:
    """Display a figure (or its Axes, or a PNG file) inline as a PNG, whatever the backend.

    Works after ``reporting.plots`` switched matplotlib to Agg; the figure is closed so that an
    inline backend does not draw it a second time.
    """
    # IPython exists where a notebook runs, not in the product's requirements
    from IPython.display import Image, display

    if isinstance(item, str | Path):
        display(Image(filename=str(item)))
        return
    fig = item if isinstance(item, Figure) else np.ravel(item)[0].figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)  # a no-op for figures pyplot does not manage
    display(Image(data=buf.getvalue()))


# --- dashboard ----------------------------------------------------------------------------

def show_dashboard(dashboard: object, study: optuna.Study | None = None,
                   height: int = 700) -> None:
    """Show a running ``search.dashboard.Dashboard`` (the study's page if given) in the cell.

    On Colab the browser cannot reach the runtime's 127.0.0.1, so Colab's port proxy serves
    it; elsewhere an IFrame of the dashboard's address (a notebook server on another machine
    needs an SSH tunnel to that port, like the command).
    """
    path = study_path(study) if study is not None else "/dashboard/"
    if "google.colab" in sys.modules:
        from google.colab import output  # type: ignore[import-not-found]

        output.serve_kernel_port_as_iframe(dashboard.port, path=path, height=str(height))
        return
    from IPython.display import IFrame, display  # a notebook's own package, as above

    display(IFrame(dashboard.url + path, width="100%", height=height))
