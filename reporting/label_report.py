"""The label-issue report: suspected mislabels found by confident learning on out-of-fold
probabilities, as CSV tables, a figure of the top suspects and a summary (markdown + JSON)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from data import EraserSet
from data.labels import MULTICLASS, read_label_csv
from data.noise import LabelIssues, class_names, joint_probs, write_cleaned, write_issues
from data.synth import TRUTH_CSV
from model import describe, evaluate
from reporting.plots import error_grid
from reporting.tables import markdown_table, staged_output, write_csv
from training.config import RunConfig
from training.crossval import CrossVal


def quality_rows(issues: LabelIssues, cv: CrossVal) -> list[dict]:
    """Every eraser: fold, given and suggested label, quality, flag, class probabilities."""
    names = class_names(issues.label_kind)
    joint = joint_probs(cv.probs, issues.label_kind)
    rank = {int(i): r + 1 for r, i in enumerate(issues.order)}
    return [{"id": k, "fold": int(cv.fold[i]), "given_label": names[issues.given[i]],
             "suggested_label": names[issues.suggested[i]],
             "quality": round(float(issues.quality[i]), 4), "flagged": int(issues.flagged[i]),
             "rank": rank.get(i, ""),
             **{f"p_{c}": round(float(joint[i, j]), 4) for j, c in enumerate(names)}}
            for i, k in enumerate(issues.ids)]


def truth_file(data_path: Path) -> Path | None:
    """A synthetic set's ``truth/clean_labels.csv`` next to the data, if there is one."""
    folder = data_path if data_path.is_dir() else data_path.parent
    path = folder / TRUTH_CSV
    return path if path.is_file() else None


def cleaned_header(data: EraserSet) -> tuple[str, ...] | None:
    """The header of the delivered CSV of the labels' kind, to keep its column names."""
    for path in data.label_files:
        lf, _ = read_label_csv(path)
        if lf is not None and lf.kind == data.label_kind and lf.header and len(lf.header) >= 2:
            return lf.header[:2]
    return None


def transitions(issues: LabelIssues) -> list[dict]:
    names = issues.classes
    counts = Counter((names[issues.given[i]], names[issues.suggested[i]]) for i in issues.order)
    return [{"given": g, "suggested": s, "erasers": n} for (g, s), n in counts.most_common()]


def write_report(out: Path, *, data: EraserSet, issues: LabelIssues, cv: CrossVal,
                 config: RunConfig, settings: dict, truth: dict | None, top: int,
                 write_clean: str | None) -> tuple[list[str], dict]:
    """All output files into ``out`` (staged: they appear together or not at all); returns
    their names and the summary."""
    files = []
    with staged_output(out) as stage:
        files.append(write_issues(stage / "label_issues.csv", issues).name)
        files.append(write_csv(stage / "label_quality.csv", quality_rows(issues, cv)).name)
        shown = issues.order[:top]
        ids = [issues.ids[i] for i in shown]
        size = min(128, data.image_size)
        images = data.images(size, ids) if ids else np.zeros((0, 6, size, size), np.uint8)
        names = issues.classes
        labels = [f"{issues.ids[i]}\n{names[issues.given[i]]}->{names[issues.suggested[i]]}"
                  for i in shown]
        error_grid(images, labels, [float(issues.quality[i]) for i in shown],
                   stage / "top_suspects.png",
                   title=f"Top {len(ids)} suspects: given->suggested, p(given)")
        files.append("top_suspects.png")
        if write_clean:
            files.append(write_cleaned(stage / "labels_cleaned.csv", issues, write_clean,
                                       header=cleaned_header(data)).name)
        summary = {**settings, "erasers": len(issues.ids), "flagged": len(issues.order),
                   "flagged_share": round(len(issues.order) / max(len(issues.ids), 1), 4),
                   "transitions": transitions(issues), "folds": cv.fold_scores,
                   "oof_metrics": oof_metrics(cv, data), "truth": truth,
                   "train_seconds": round(cv.seconds, 1), "config": config.to_dict()}
        summary["caution"] = caution(summary)
        (stage / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        files.append("summary.json")
        (stage / "summary.md").write_text(summary_md(summary, config, write_clean))
        files.append("summary.md")
    return files, summary


def oof_metrics(cv: CrossVal, data: EraserSet) -> dict:
    m = evaluate(cv.probs, data.targets)
    out = {k: round(v, 4) for k in ("graded_ap", "defect_ap", "graded_f1")
           if math.isfinite(v := m.get(k, math.nan))}
    columns = [("defect", data.defect, 3)]
    if data.label_kind == MULTICLASS:  # binary labels say nothing about the kind
        columns += [("print", data.targets[:, 0], 0), ("physical", data.targets[:, 1], 1)]
    for name, y, col in columns:
        if 0 < y.sum() < len(y):
            out[f"{name}_auroc"] = round(float(roc_auc_score(y, cv.probs[:, col])), 4)
    return out


WEAK_AUROC = 0.8  # below this the flags say more about the model than about the labels
MANY_FLAGGED = 0.15


def caution(summary: dict) -> str | None:
    """A warning when the flags are probably the model's mistakes rather than label errors."""
    metrics = summary["oof_metrics"]
    auroc = metrics.get("defect_auroc", math.nan)
    # A model can separate defective from good on print defects alone and still be blind to
    # physical ones: it then cannot find a missed physical defect, so the weakest kind counts.
    weakest = min(((metrics[f"{k}_auroc"], k) for k in ("print", "physical")
                   if f"{k}_auroc" in metrics), default=(math.inf, ""))
    # an undefined AUROC (no defective or no good eraser) says nothing good about the model
    if not auroc >= WEAK_AUROC or summary["flagged_share"] > MANY_FLAGGED:
        return (f"Caution: the cross-validated model separates defective from good erasers "
                f"only with AUROC {auroc:.2f} and flags {100 * summary['flagged_share']:.0f} % "
                "of the erasers; with a weak model most flags are its own mistakes. Train a "
                "stronger configuration (more epochs, a better trial) before cleaning, or keep "
                "to --missed-only and look at top_suspects.png first.")
    if not weakest[0] >= WEAK_AUROC:
        return (f"Caution: the cross-validated model recognises {weakest[1]} defects only "
                f"with AUROC {weakest[0]:.2f}, so it cannot find {weakest[1]} defects "
                "labelled good, and its flags of that kind are mostly its own mistakes. Train "
                "a stronger configuration (a better trial, more pixels, the NORMAL channel "
                "for physical defects) before trusting the list.")
    return None


def summary_md(s: dict, config: RunConfig, write_clean: str | None) -> str:
    lines = [
        "# Suspected label errors",
        "",
        f"{s['flagged']} of {s['erasers']} erasers flagged ({100 * s['flagged_share']:.1f} %) "
        f"by confident learning (cleanlab `find_label_issues`, filter `{s['filter_by']}`) on "
        f"out-of-fold probabilities from {s['n_folds']}-fold cross-validation "
        f"(seed {s['seed']}).",
        "",
        f"Model: {describe(config.model)}; {config.train.epochs} epochs max "
        f"({s['config_source']}).",
        "",
        "Out-of-fold scores against the given (noisy) labels: "
        + ", ".join(f"{k} {v:.3f}" for k, v in s["oof_metrics"].items()) + ".",
        "",
    ]
    if s["caution"]:
        lines += [f"**{s['caution']}**", ""]
    if s["truth"]:
        t = s["truth"]
        lines += [
            f"Against the true labels ({t['file']}): {t['found']} of {t['mislabelled']} "
            f"mislabelled erasers found, precision {t['precision']:.2f}, recall "
            f"{t['recall']:.2f}.",
            "",
        ]
    lines += ["## Given -> suggested", "", markdown_table(s["transitions"]), "",
              "## Folds", "", markdown_table(s["folds"]), "",
              "## Files", "",
              "- `label_issues.csv`: flagged erasers, most suspicious first",
              "- `label_quality.csv`: every eraser's out-of-fold probabilities and quality",
              "- `top_suspects.png`: the most suspicious erasers", ""]
    if write_clean:
        done = {"drop": "dropped", "relabel": "relabelled"}[write_clean]
        lines += [f"- `labels_cleaned.csv`: the labels with the flagged erasers {done} (use "
                  "with `--labels`)", ""]
    lines += ["![top suspects](top_suspects.png)", ""]
    return "\n".join(lines)
