"""The notebook front end's few helpers (``notebooks/quickstart.ipynb``): progress bars that
render in Jupyter and Colab, figures shown inline, the dashboard shown in a cell.

Like ``data/cli.py`` for the commands, this is front-end code: it draws bars and displays
figures; the work itself is done by the same functions the commands call.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from data import EraserSet
from model import PROB_NAMES, InspectionModel
from search import plots
from search.evaluate import predict_set, score
from search.study import n_finished
from search.train import EpochReport

log = logging.getLogger(__name__)

DPI = 100


# --- progress -----------------------------------------------------------------------------

def _describe(trial: FrozenTrial) -> str:
    value = f" {trial.value:.4f}" if trial.value is not None else ""
    return f"trial {trial.number:3d} {trial.state.name}{value}"


class StudyProgress:
    """A bar for the study (finished trials) and one for the running trial's epochs.

    ``tqdm.auto`` draws them as widgets in Jupyter and Colab (text bars elsewhere). Pass
    ``on_epoch`` to ``search.session.make_objective`` and ``on_trial`` to
    ``search.session.run``; use it as a context manager so the bars close on errors and
    interrupts too. ``describe`` writes one line per finished trial (``run_study.trial_line``
    gives the command's lines).
    """

    def __init__(self, study: optuna.Study, n_trials: int, *,
                 describe: Callable[[FrozenTrial], str] = _describe,
                 bar: Callable[..., tqdm] = tqdm) -> None:
        self._bar = bar
        self._describe = describe
        self.study_bar = bar(total=n_trials, initial=min(n_finished(study), n_trials),
                             desc="study", unit="trial")
        self.trial_bar: tqdm | None = None
        self._trial: int | None = None

    def on_epoch(self, number: int, report: EpochReport) -> None:
        if self.trial_bar is None or self._trial != number:
            self._close_trial()
            self._trial = number
            self.trial_bar = self._bar(total=report.epochs, desc=f"trial {number}",
                                       unit="epoch", leave=False)
        self.trial_bar.update(1)
        self.trial_bar.set_postfix(loss=f"{report.train_loss:.3f}",
                                   score=f"{report.score:.3f}", best=f"{report.best_score:.3f}")

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._close_trial()
        self.study_bar.n = min(n_finished(study), self.study_bar.total)
        with contextlib.suppress(ValueError):  # no completed trial yet
            self.study_bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        self.study_bar.refresh()
        self.study_bar.write(self._describe(trial))

    def close(self) -> None:
        self._close_trial()
        self.study_bar.close()

    def _close_trial(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- data ---------------------------------------------------------------------------------

def synthetic_set(folder: str | Path, *, n: int, seed: int, size: int = 310,
                  subtle_rate: float | None = None) -> Path:
    """A synthetic MILAN delivery in ``folder``, made once: reused while it holds ``n``
    erasers of ``size`` px, remade otherwise (settings changed, or an interrupted run: the
    label files are written last)."""
    from data.synth import generate

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
    metrics (``search.evaluate.score``) and PNGs of the *defect* PR curve and confusion
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
    """Optuna's own plots, matplotlib flavour (no extra dependency, renders everywhere):
    optimisation history, hyperparameter importances (fANOVA) and intermediate values
    (per-epoch validation scores, where pruning cut trials). Plots with nothing to show yet
    are left out (Optuna would draw them empty): all before a trial completes, importances
    before two have."""
    from optuna.visualization import matplotlib as ov

    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    wanted = {"history": (ov.plot_optimization_history, complete >= 1),
              "importances": (ov.plot_param_importances, complete >= 2),
              "intermediate values": (ov.plot_intermediate_values,
                                      any(t.intermediate_values for t in trials))}
    out: dict[str, Figure] = {}
    for name, (plot, drawable) in wanted.items():
        if not drawable:
            log.info("no %s plot yet (%d completed trials)", name, complete)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            out[name] = np.ravel(plot(study))[0].figure
    return out


def show(item: Figure | object | str | Path) -> None:
    """Display a figure (or its Axes, or a PNG file) inline as a PNG, whatever the backend.

    Works after ``search.plots`` switched matplotlib to Agg; the figure is closed so that an
    inline backend does not draw it a second time.
    """
    from IPython.display import Image, display

    if isinstance(item, str | Path):
        display(Image(filename=str(item)))
        return
    fig = item if isinstance(item, Figure) else np.ravel(item)[0].figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

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
    from search.dashboard import study_path

    path = study_path(study) if study is not None else "/dashboard/"
    if "google.colab" in sys.modules:
        from google.colab import output  # type: ignore[import-not-found]

        output.serve_kernel_port_as_iframe(dashboard.port, path=path, height=str(height))
        return
    from IPython.display import IFrame, display

    display(IFrame(dashboard.url + path, width="100%", height=height))
