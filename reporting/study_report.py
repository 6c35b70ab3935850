"""Figures and tables of a study for the write-up, tied together in one report.md
(``report.py``; :func:`build_report`).

Follows the write-up's sections. Data: erasers, class balance, split, flagged labels.
Methodology: the best trial's architecture. Experimental setup: the search space, the best
hyperparameters and training settings, hardware and timing. Results: optimisation history,
parameter importances, parallel coordinates, intermediate values (pruning), the best trial's
learning curves, and, recomputed from the best trial's stored weights on the study's own
validation split, per-class metrics, confusion matrices, PR and ROC curves with the operating
point, the threshold sweep (precision/recall/F1 vs threshold) and the worst false negatives
and false positives. Figures are PNG (line charts also SVG); tables are markdown and CSV.

Nothing is retrained. Without the study's data (moved? pass --data) or weights (pass
--artifact-dir) the report still holds everything the study itself stored, and says what it
left out.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial, TrialState
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

import model as model_lib
from data.errors import DataError, format_problems
from model import PROB_NAMES, targets_to_truth
from reporting import plots
from reporting.plots import (
    LABELS,
    draw_confusion,
    draw_pr,
    draw_roc,
    error_grid,
    training_curves,
)
from reporting.tables import latex_table, markdown_table, staged_output, write_csv
from reporting.trial_report import worst_errors
from search.export import fetch_checkpoint, study_data, test_metrics, validation_targets
from search.space import trial_config
from search.study import StudyError
from training.scoring import predict_set

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

DPI = 300  # print-ready
PAPER_WIDTH = 7.0  # inches: a double column; single-column figures are 3.3
FONT = 8  # points: the smallest text a paper's figures should carry at their width
PAPER_STYLE = {"font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT,
               "xtick.labelsize": FONT, "ytick.labelsize": FONT, "legend.fontsize": FONT,
               "figure.titlesize": FONT}
CLASSES = PROB_NAMES
N_ERRORS = 4


@dataclass
class Report:
    """What goes into report.md: sections of markdown lines, files written, notes."""

    out: Path
    sections: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, *lines: str) -> None:
        self.sections.setdefault(section, []).extend(lines)

    def figure(self, section: str, fig: plt.Figure, name: str, caption: str, *,
               svg: bool = True) -> None:
        """Save ``fig`` as ``name``.pdf (for the paper) and a 300 dpi ``name``.png and link
        it under ``section`` with its caption (``svg`` also writes an SVG: line charts)."""
        fig.tight_layout()
        for ext in ("png", "pdf", *(("svg",) if svg else ())):
            fig.savefig(self.out / f"{name}.{ext}", dpi=DPI)
            self.files.append(f"{name}.{ext}")
        plt.close(fig)
        self.add(section, f"![{name.replace('_', ' ')}]({name}.png)", "", f"*{caption}*", "")

    def table(self, name: str, rows: list[dict]) -> None:
        """Write ``rows`` as ``name``.csv and a booktabs ``name``.tex for the paper."""
        write_csv(self.out / f"{name}.csv", rows)
        (self.out / f"{name}.tex").write_text(latex_table(rows))
        self.files += [f"{name}.csv", f"{name}.tex"]


SECTIONS = ("1. Data", "2. Methodology", "3. Experimental setup", "4. Results")


# ---------------------------------------------------------------------------------------------
# study-level tables and figures


def trial_seconds(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def fmt(v, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return str(v)


def data_section(r: Report, study: optuna.Study) -> None:
    a = study.user_attrs
    s = a.get("data", {})
    sec = SECTIONS[0]
    if not s:
        r.add(sec, "The study stored no data summary.", "")
        return
    n = max(s.get("erasers", 0), 1)
    r.add(sec, f"{s.get('erasers')} labelled erasers ({s.get('label_kind')} labels), "
          f"{s.get('image_size')}x{s.get('image_size')} px, channels "
          f"{', '.join(s.get('channels', []))}. Source: `{s.get('source')}`.", "")
    rows = [{"group": g, "erasers": s[k], "share": f"{100 * s[k] / n:.1f} %"}
            for g, k in (("defective", "defect"), ("print error (X=1)", "print"),
                         ("physical defect (Y=1)", "physical")) if k in s]
    rows += [{"group": f"class {c}", "erasers": k, "share": f"{100 * k / n:.1f} %"}
             for c, k in s.get("classes", {}).items()]
    r.add(sec, "Class balance (given labels):", "", markdown_table(rows), "")
    r.table("class_balance", rows)
    sp = a.get("split", {})
    if sp:
        r.add(sec, f"Split: {sp.get('n_train')} training / {sp.get('n_val')} validation "
              f"erasers, stratified on X_Y ({sp.get('k')} folds, fold {sp.get('fold', 0)} "
              f"held out, seed {sp.get('seed')}; hash `{a.get('split_hash')}`).", "")
    if a.get("n_flagged"):
        r.add(sec, f"Label noise: {a['n_flagged']} erasers were flagged as suspected "
              "mislabels (`python label_issues.py`) and the search tuned their loss "
              "weight (`flagged_weight`, 0 = dropped).", "")
    else:
        r.add(sec, "Label noise: no flagged list was used; `python label_issues.py` "
              "finds suspected mislabels, `python analyze_data.py` gives the full data "
              "analysis.", "")


def best_config(study: optuna.Study, best: FrozenTrial) -> dict:
    """The best trial's whole run configuration as plain data, or {} when it does not replay
    in this version's search space (the report then leaves those tables out)."""
    try:
        return trial_config(best, study.user_attrs.get("space", {})).to_dict()
    except ValueError as exc:
        log.warning("%s: the configuration tables are left out", exc)
        return {}


def methodology_section(r: Report, best: FrozenTrial, cfg: dict) -> None:
    sec = SECTIONS[1]
    a = best.user_attrs
    r.add(sec, f"Best trial {best.number}: `{a.get('architecture', '?')}`, "
          f"{a.get('params', 0):,} parameters, {a.get('macs', 0) / 1e6:.1f} M multiply-adds "
          "per eraser.", "")
    if cfg.get("model"):
        rows = [{"setting": k, "value": fmt(v)} for k, v in cfg["model"].items()]
        r.add(sec, "Architecture of the best trial:", "", markdown_table(rows), "")
        r.table("architecture", rows)


def distributions(study: optuna.Study) -> dict[str, str]:
    """Every parameter the study sampled, with its range or choices (union over trials)."""
    out: dict[str, str] = {}
    for t in study.get_trials(deepcopy=False):
        for name, d in t.distributions.items():
            if name in out:
                continue
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                out[name] = "{" + ", ".join(map(str, d.choices)) + "}"
            else:
                scale = " (log)" if getattr(d, "log", False) else ""
                out[name] = f"[{d.low:g}, {d.high:g}]{scale}"
    return out


def setup_section(r: Report, study: optuna.Study, best: FrozenTrial,
                  trials: list[FrozenTrial], cfg: dict) -> None:
    sec = SECTIONS[2]
    space = study.user_attrs.get("space", {})
    metric = space.get("metric", "objective")
    dist = distributions(study)
    rows = [{"parameter": k, "searched over": v, "best trial": fmt(best.params.get(k, "-"))}
            for k, v in dist.items()]
    r.add(sec, f"Objective: validation `{metric}` (maximised). Each trial trains up to "
          f"{space.get('epochs', '?')} epochs with early stopping (patience "
          f"{space.get('patience', '?')}) and is pruned on its per-epoch validation score.", "",
          "Search space and the best trial's hyperparameters:", "", markdown_table(rows), "")
    r.table("search_space", rows)
    bounds = [{"bound": k, "value": fmt(v)} for k, v in space.items()]
    if bounds:
        r.add(sec, "Bounds of the study (stored with it):", "", markdown_table(bounds), "")
    train_cfg = cfg.get("train", {})
    if train_cfg:
        rows = [{"setting": k, "value": fmt(v)} for k, v in train_cfg.items()]
        r.add(sec, "Training settings of the best trial (loss, optimiser, schedule...):", "",
              markdown_table(rows), "")
        r.table("best_training", rows)
    aug = cfg.get("augment", {})
    if aug:
        r.add(sec, "Augmentation of the best trial: "
              + ", ".join(f"{k} {fmt(v)}" for k, v in aug.items()) + ".", "")
    hardware_section(r, trials)


def hardware_section(r: Report, trials: list[FrozenTrial]) -> None:
    sec = SECTIONS[2]
    states = Counter(t.state.name.lower() for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    timed = [(s, t.user_attrs.get("epochs_run") or 1) for t in done
             if (s := t.user_attrs.get("seconds", trial_seconds(t)))]
    secs = [s for s, _ in timed]
    per_epoch = [s / e for s, e in timed]
    wall = [s for t in trials if (s := trial_seconds(t))]
    devices = Counter(t.user_attrs.get("device", "not recorded") for t in done)
    rows = [
        {"what": "trials", "value": ", ".join(f"{n} {s}" for s, n in states.items())},
        {"what": "device(s)", "value": "; ".join(f"{d} ({n} trials)" for d, n in
                                                 devices.items()) or "n/a"},
        {"what": "training seconds per completed trial (median, max)",
         "value": f"{statistics.median(secs):.1f}, {max(secs):.1f}" if secs else "n/a"},
        {"what": "seconds per epoch (median over completed trials)",
         "value": f"{statistics.median(per_epoch):.2f}" if per_epoch else "n/a"},
        {"what": "wall-clock of all trials together (s)",
         "value": f"{sum(wall):.0f}" if wall else "n/a"},
    ]
    r.add(sec, "Hardware and timing:", "", markdown_table(rows), "")
    r.table("timing", rows)


def study_figures(r: Report, study: optuna.Study, metric: str) -> None:
    """The study-level figures (``reporting.plots``), each skipped with a note when there is
    nothing to draw yet."""
    sec = SECTIONS[3]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    r.figure(sec, plots.history_figure(study, metric), "optimization_history",
             f"Optimisation history: validation {metric} per completed trial and the "
             "best so far.")
    importances, why_not = plots.param_importances(study)
    if importances:
        rows = [{"parameter": k, "importance": round(v, 4)} for k, v in importances.items()]
        r.table("param_importances", rows)
        r.add(sec, "Most important parameters:", "", markdown_table(rows[:10]), "")
        r.figure(sec, plots.importance_figure(importances, metric), "param_importances",
                 f"Parameter importances over {len(done)} completed trials (Optuna's "
                 f"default evaluator, {plots.IMPORTANCE_METHOD}); few trials make them rough.")
        try:
            r.figure(sec, plots.parallel_figure(study, list(importances)[:8], metric),
                     "parallel_coordinates", "Parallel coordinates: each line is a completed "
                     "trial, coloured by its validation score.", svg=False)
        except (ValueError, RuntimeError) as exc:
            r.notes.append(f"parallel coordinates not drawn: {exc}")
    else:
        r.notes.append(f"parameter importances not computed: {why_not}")
    fig = plots.intermediate_figure(study, metric)
    if fig is None:
        r.notes.append("no trial reported intermediate values.")
    else:
        r.figure(sec, fig, "intermediate_values",
                 "Intermediate values: validation score per epoch of every trial; the "
                 "pruner stopped the hopeless ones early.")


def selection_caveat(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """Why the best validation score overstates what new erasers will see, in numbers."""
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    n_val = study.user_attrs.get("split", {}).get("n_val", "?")
    return (f"The same {n_val} validation erasers chose this trial among {done} completed "
            "ones, its best epoch and its thresholds, so its validation figures are "
            "optimistic for new erasers (more so with more trials and a smaller split). "
            + ("The test split below gives the unbiased figure. "
               if study.user_attrs.get("split", {}).get("n_test") else
               "For an unbiased figure, score labelled erasers the study never saw "
               "(`python predict.py GROUP.pth HELD_OUT/` prints the same metrics) or set a "
               "test split aside (`run_study.py --test-fraction`); ")
            + "for a less biased figure over every eraser, cross-validate the best "
            f"configuration: `python label_issues.py DATA/ --study {study.study_name}` reports "
            "its out-of-fold AUC-PR.")


def trials_table(r: Report, trials: list[FrozenTrial], metric: str) -> None:
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     metric: round(t.value, 4) if t.value is not None else "",
                     "defect_ap": a.get("defect_ap", ""), "graded_f1": a.get("graded_f1", ""),
                     "best_epoch": a.get("best_epoch", ""),
                     "epochs_run": a.get("epochs_run", ""), "params": a.get("params", ""),
                     "seconds": a.get("seconds", ""), "architecture": a.get("architecture", ""),
                     "reason": a.get("stop_reason") or a.get("fail_reason") or ""})
    r.table("trials", rows)
    top = sorted((x for x in rows if x["state"] == "complete"),
                 key=lambda x: -float(x[metric]))[:5]
    r.add(SECTIONS[3], "Top trials (validation):", "",
          markdown_table(top, ["trial", metric, "defect_ap", "graded_f1", "best_epoch",
                               "params", "architecture"]), "",
          "All trials: `trials.csv`.", "")


# ---------------------------------------------------------------------------------------------
# the best trial: curves from its history, metrics from its weights


def trial_history(trial: FrozenTrial, storage: optuna.storages.BaseStorage,
                  artifact_dir: Path) -> list | None:
    """The per-epoch history of a trial (its ``history.json`` artifact), or None."""

    try:
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
    except Exception:  # an old storage without artifact metadata: just no curves
        return None
    meta = next((m for m in metas if m.filename == "history.json"), None)
    if meta is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.json"
        try:
            download_artifact(artifact_store=FileSystemArtifactStore(str(artifact_dir)),
                              artifact_id=meta.artifact_id, file_path=str(path))
        except (FileNotFoundError, optuna.artifacts.exceptions.ArtifactNotFound):
            return None
        return json.loads(path.read_text())


def curves_figure(r: Report, best: FrozenTrial, history: list[dict], metric: str) -> None:

    name = "best_trial_curves.png"
    training_curves(history, r.out / name, metric=metric,
                    title=f"Best trial {best.number}: training vs validation")
    r.files.append(name)
    r.add(SECTIONS[3], f"![best trial curves]({name})", "",
          f"*Learning curves of the best trial ({len(history)} epochs; best epoch "
          f"{best.user_attrs.get('best_epoch', '?')}).*", "")


def per_class_metrics(probs: np.ndarray, targets: np.ndarray,
                      thresholds: dict[str, float]) -> list[dict]:


    truth = targets_to_truth(targets)
    rows = []
    for j, name in enumerate(CLASSES):
        y, s = truth[:, j], probs[:, j]
        thr = float(thresholds.get(name, 0.5))
        pred = (s >= thr).astype(int)
        both = 0 < y.sum() < len(y)
        rows.append({
            "class": LABELS[name], "positives": int(y.sum()), "of": len(y),
            "auc_pr": round(float(average_precision_score(y, s)), 4) if both else math.nan,
            "auroc": round(float(roc_auc_score(y, s)), 4) if both else math.nan,
            "threshold": round(thr, 4),
            "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
            "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
            "f1": round(float(f1_score(y, pred, zero_division=0)), 4),
        })
    return rows


def _class_grid() -> tuple[plt.Figure, np.ndarray]:
    """Four panels, one per class, 2 x 2 at a double column's width (7 in: 8 pt text stays
    8 pt in the paper). Titles name the class; the caption in report.md says the rest."""
    fig, axes = plt.subplots(2, 2, figsize=(PAPER_WIDTH, 6.2))
    return fig, axes.ravel()


def confusion_figure(truth: np.ndarray, probs: np.ndarray, thresholds: dict) -> plt.Figure:
    fig, axes = _class_grid()
    for j, (ax, name) in enumerate(zip(axes, CLASSES, strict=True)):
        thr = float(thresholds.get(name, 0.5))
        draw_confusion(ax, truth[:, j], probs[:, j] >= thr,
                       f"{LABELS[name]} (threshold {thr:.2f})", labels=("no", "yes"),
                       fontsize=FONT)
    return fig


def curve_figure(truth: np.ndarray, probs: np.ndarray, thresholds: dict,
                 kind: str) -> plt.Figure:
    """PR (``kind='pr'``) or ROC (``'roc'``) curve per class with the operating point."""
    draw = draw_pr if kind == "pr" else draw_roc
    fig, axes = _class_grid()
    for j, (ax, name) in enumerate(zip(axes, CLASSES, strict=True)):
        draw(ax, truth[:, j], probs[:, j], float(thresholds.get(name, 0.5)), LABELS[name],
             legend_size=FONT)
    return fig


def sweep_figure(truth: np.ndarray, probs: np.ndarray, thresholds: dict) -> plt.Figure:
    grid = np.linspace(0.01, 0.99, 99)
    fig, axes = _class_grid()
    for j, (ax, name) in enumerate(zip(axes, CLASSES, strict=True)):
        y, s = truth[:, j].astype(bool), probs[:, j]
        pred = s[None, :] >= grid[:, None]
        tp = (pred & y).sum(axis=1)
        precision = np.where(pred.sum(axis=1) > 0, tp / np.maximum(pred.sum(axis=1), 1), np.nan)
        recall = tp / max(int(y.sum()), 1)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        ax.plot(grid, precision, label="precision")
        ax.plot(grid, recall, label="recall")
        ax.plot(grid, f1, label="F1", lw=2)
        thr = float(thresholds.get(name, 0.5))
        ax.axvline(thr, color="crimson", ls="--", lw=1, label=f"chosen {thr:.2f}")
        ax.set(xlabel="decision threshold on p", ylabel="score", xlim=(0, 1), ylim=(0, 1.02))
        ax.set_title(LABELS[name])
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left")
    return fig


def best_trial_results(r: Report, study: optuna.Study, best: FrozenTrial, artifact_dir: Path,
                       data_path: str | None, cache_dir: str | None) -> None:
    """Recompute the best trial's validation probabilities and draw what needs them."""
    sec = SECTIONS[3]
    try:
        ckpt = fetch_checkpoint(best, artifact_dir)
        net = model_lib.model_from_checkpoint(ckpt, f"trial {best.number}")
        data, split = study_data(study, data_path, cache_dir=cache_dir)
    except (StudyError, model_lib.CheckpointError) as exc:
        r.notes.append(f"validation figures of the best trial left out: {exc}")
        stored = [{"metric": k, "value": v} for k, v in sorted(best.user_attrs.items())
                  if isinstance(v, float) and k.endswith(("_ap", "_f1"))]
        r.add(sec, "Validation metrics stored with the best trial:", "",
              markdown_table(stored), "")
        return
    except DataError as exc:
        r.notes.append("validation figures of the best trial left out: the study's data "
                       f"cannot be loaded:\n{format_problems(exc.problems)}")
        return
    val_ids = split.val_ids()
    probs = predict_set(net, data, val_ids)
    targets = validation_targets(data, val_ids)
    thresholds = dict(net.thresholds)

    truth = targets_to_truth(targets)
    rows = per_class_metrics(probs, targets, thresholds)
    r.table("validation_metrics", rows)
    graded = [x for x in rows if x["class"] != LABELS["defect"]]
    mean_ap = float(np.mean([x["auc_pr"] for x in graded]))
    mean_f1 = float(np.mean([x["f1"] for x in graded]))
    r.add(sec, f"Validation results of the best trial (trial {best.number}, {len(val_ids)} "
          "erasers, recomputed from its stored weights at its stored thresholds). Graded: "
          f"mean AUC-PR {mean_ap:.3f}, mean F1 {mean_f1:.3f} over print error, physical error "
          "and no defect.", "", markdown_table(rows), "")
    test = test_metrics(net, data, split)
    if test is not None:
        nan = float("nan")
        both = [{"class": LABELS[name], "validation AUC-PR": x["auc_pr"], "test AUC-PR":
                 round(test.get(f"{name}_ap", nan), 4), "validation F1": x["f1"],
                 "test F1": round(test.get(f"{name}_f1", nan), 4)}
                for name, x in zip(CLASSES, rows, strict=True)]
        r.table("validation_vs_test", both)
        r.add(sec, f"The same model on the test split ({test['n']} erasers set aside before "
              "the split: no trial, epoch or threshold choice saw them), at the same "
              f"thresholds. Graded test AUC-PR {test.get('graded_ap', nan):.3f}, F1 "
              f"{test.get('graded_f1', nan):.3f}; the drop from validation is what choosing "
              "on the validation split cost.", "", markdown_table(both), "")
    r.figure(sec, confusion_figure(truth, probs, thresholds), "confusion_matrices",
             "Confusion matrices per class at the chosen thresholds (validation).")
    r.figure(sec, curve_figure(truth, probs, thresholds, "pr"), "pr_curves",
             "Precision-recall per class; the dot is the operating point.")
    r.figure(sec, curve_figure(truth, probs, thresholds, "roc"), "roc_curves",
             "ROC per class; the dot is the operating point.")
    r.figure(sec, sweep_figure(truth, probs, thresholds), "threshold_sweep",
             "Precision, recall and F1 against the decision threshold; dashed: the chosen "
             "threshold.")
    y, s = truth[:, 3], probs[:, 3]
    thr = float(thresholds.get("defect", 0.5))
    fn, fp = worst_errors(y, s, thr, N_ERRORS)
    size = min(96, data.image_size)
    grids = ((fn, "false negatives: labelled defective, missed", "false_negatives"),
             (fp, "false positives: labelled good, flagged", "false_positives"))
    for rows_, what, name in grids:
        ids = [val_ids[i] for i in rows_]
        images = (data.images(size, ids) if ids else np.zeros((0, 6, size, size), np.uint8))
        error_grid(images, ids, s[rows_].tolist(), r.out / f"{name}.png",
                   f"Worst {what} (p = probability of a defect, threshold {thr:.2f})")
        r.files.append(f"{name}.png")
        r.add(sec, f"![{name}]({name}.png)", "",
              f"*Worst {what}: {len(ids)} shown (all six channels).*", "")


# ---------------------------------------------------------------------------------------------


def build_report(study: optuna.Study, best: FrozenTrial, out: Path, *,
                 storage: optuna.storages.BaseStorage, artifact_dir: Path,
                 data_path: str | None = None, cache_dir: str | None = None,
                 predict: bool = True) -> Report:
    """Write every table, figure and report.md into ``out`` (staged: all or nothing)."""
    trials = study.get_trials(deepcopy=False)
    metric = study.user_attrs.get("space", {}).get("metric", "objective")
    with staged_output(out) as stage, matplotlib.rc_context(PAPER_STYLE):
        r = Report(stage)
        data_section(r, study)
        cfg = best_config(study, best)
        methodology_section(r, best, cfg)
        setup_section(r, study, best, trials, cfg)
        r.add(SECTIONS[3], f"Best trial: {best.number}, validation {metric} "
              f"{best.value:.4f}.", "", selection_caveat(study, trials), "")
        trials_table(r, trials, metric)
        study_figures(r, study, metric)
        history = trial_history(best, storage, artifact_dir)
        if history:
            curves_figure(r, best, history, metric)
        else:
            r.notes.append(f"the best trial's history.json artifact is not in {artifact_dir}; "
                           "learning curves left out (pass --artifact-dir).")
        if predict:
            best_trial_results(r, study, best, artifact_dir, data_path, cache_dir)
        (stage / "report.md").write_text(report_md(r, study, best))
        r.files.append("report.md")
    r.out = out
    return r


def report_md(r: Report, study: optuna.Study, best: FrozenTrial) -> str:
    lines = [f"# Study `{study.study_name}`", "",
             "Figures and tables for the write-up, in its order. Regenerate with `python "
             f"report.py --study {study.study_name}`.", ""]
    for sec in SECTIONS:
        lines += [f"## {sec}", "", *r.sections.get(sec, ["(nothing stored)", ""])]
    if r.notes:
        lines += ["## Left out", "", *[f"- {n}" for n in r.notes], ""]
    tables = sorted(f for f in r.files if f.endswith(".csv"))
    lines += ["## Files", "", "Tables as CSV: " + ", ".join(f"`{f}`" for f in tables) + ".",
              ""]
    return "\n".join(lines)
