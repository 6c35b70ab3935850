"""Figures and tables of a study for the write-up, tied together in one report.md
(``report.py``; :func:`build_report`).

Follows the write-up's sections. Data: erasers, class balance (table and figure), split, a
sample grid per class with all six channels, label-noise examples when the study was run
with a flagged list. Methodology: the best trial's architecture, one row per setting (scratch
CNN or pretrained backbone). Experimental setup: the search space, the best hyperparameters
and training settings, augmentation examples (draws of the best trial's own augmentation),
hardware and timing. Results: top trials, optimisation history, importance of the top
parameters, parallel coordinates, intermediate values (pruning), the best trial's learning
curves, and, recomputed from its stored weights on the study's own validation split:
per-class metrics, the 4x4 ``X_Y`` confusion matrix, per-class confusion matrices, PR and ROC
curves with the operating point, the threshold sweep, the worst errors, and the test split
next to validation when the study set one aside.

Every figure is drawn in one style (``plots.figure_style``: ``paper``, 3.3 or 7 inches wide
with 8 pt text, or ``slides``) and saved as PDF and 300 dpi PNG (charts also SVG), linked
from report.md with a numbered caption; every table is markdown in report.md, CSV and a
booktabs LaTeX file. Nothing is retrained. Without the study's data (moved? pass --data) or
weights (pass --artifact-dir) the report still holds everything the study itself stored, and
says what it left out.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import torch
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
from data.augment import AugmentConfig, build_augmenter
from data.dataset import EraserSet
from data.errors import DataError, format_problems
from data.labels import MULTICLASS
from data.noise import flagged_hash, given_classes, joint_probs, read_flagged
from data.sources import strip_extension
from data.split import Split
from model import PROB_NAMES, targets_to_truth
from model.config import BackboneConfig, PatchConfig
from reporting import plots
from reporting.data_report import CLASS_NAMES, class_list, class_of
from reporting.manuscript import Facts, TitlePage, manuscript_tex
from reporting.plots import LABELS, FigureStyle
from reporting.tables import latex_table, markdown_table, staged_output, write_csv
from search.export import fetch_checkpoint, study_data, test_metrics, validation_targets
from search.space import trial_config
from search.study import StudyError
from training.config import RunConfig
from training.scoring import predict_set

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

DPI = plots.SAVE_DPI  # print-ready
CLASSES = PROB_NAMES
N_SAMPLES = 3  # erasers per class in the sample grids
N_FLAGGED = 6  # label-noise examples shown
N_DRAWS = 4  # augmentation draws shown
N_ERRORS = 6  # worst errors shown
GRID_DPI = 200  # image tiles are resized to about this many pixels per inch they fill
TOP_PARAMS = 8  # parameters in the importance and parallel-coordinate figures
SECTIONS = ("1. Data", "2. Methodology", "3. Experimental setup", "4. Results")


@dataclass
class Report:
    """What goes into report.md: sections of markdown lines, files written, notes; the style
    every figure is drawn in."""

    out: Path
    style: FigureStyle = plots.STYLES["paper"]
    sections: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: Facts = field(default_factory=Facts)  # what the manuscript's prose needs

    def add(self, section: str, *lines: str) -> None:
        self.sections.setdefault(section, []).extend(lines)

    def size(self, width: str, aspect: float) -> tuple[float, float]:
        return self.style.size(width, aspect)

    def figure(self, section: str, fig: plt.Figure, name: str, caption: str) -> None:
        """Save ``fig`` as ``name``.pdf (for the paper) and a 300 dpi ``name``.png and link
        it under ``section`` with its caption."""
        for ext in ("png", "pdf"):
            fig.savefig(self.out / f"{name}.{ext}", dpi=DPI)
            self.files.append(f"{name}.{ext}")
            if fig.get_layout_engine() is not None:  # laid out once: the PDF keeps it
                fig.set_layout_engine("none")
        plt.close(fig)
        self.add(section, f"![{name.replace('_', ' ')}]({name}.png)", "",
                 f"*Figure {{figure}}. {caption}* ([PDF]({name}.pdf))", "")

    def table(self, section: str, name: str, rows: list[dict], caption: str, *,
              shown: list[dict] | None = None, columns: list[str] | None = None) -> None:
        """``rows`` as ``name``.csv and a booktabs ``name``.tex for the paper, and as markdown
        under ``section`` (``shown``: only those rows there) with its caption."""
        write_csv(self.out / f"{name}.csv", rows)
        (self.out / f"{name}.tex").write_text(latex_table(rows, columns))
        self.files += [f"{name}.csv", f"{name}.tex"]
        self.add(section, f"*Table {{table}}. {caption}* (`{name}.tex`, `{name}.csv`)", "",
                 markdown_table(rows if shown is None else shown, columns), "")


@dataclass
class StudyData:
    """The study's erasers and split, re-derived and checked against its hashes."""

    data: EraserSet
    split: Split

    def parts(self) -> dict[str, list[str]]:
        out = {"train": self.split.train_ids(), "validation": self.split.val_ids()}
        if self.split.test:
            out["test"] = self.split.test_ids()
        return out

    def part_of(self) -> dict[str, str]:
        return {k: part for part, ids in self.parts().items() for k in ids}

    def classes(self) -> dict[str, str]:
        """Class per eraser: ``X_Y``, or good/defect with binary-only labels."""
        return dict(zip(self.data.ids, class_of(self.data), strict=True))


@dataclass
class Flagged:
    """Suspected mislabels the study was run with, most suspicious first, and the label
    confident learning suggested for each (where the list says)."""

    ids: list[str]
    suggested: dict[str, str]
    source: str


def read_flagged_list(study: optuna.Study, path: str | Path | None) -> Flagged | None:
    """The flagged list of ``study``: ``path`` (the CSV given to ``run_study.py --flagged``,
    checked against the hash the study stored) or the list the study stored itself; None
    without either. Raises ``data.noise.NoiseError`` for an unreadable file and
    :class:`StudyError` for another list than the study's."""
    if path is None:
        stored = study.user_attrs.get("flagged")
        return Flagged(list(stored), {}, "stored with the study") if stored else None
    ids = read_flagged(path)
    if flagged_hash(ids) != study.user_attrs.get("flagged_hash"):
        had = study.user_attrs.get("n_flagged", 0)
        raise StudyError(f"{path} ({len(set(ids))} ids) is not the flagged list study "
                         f"{study.study_name!r} was run with ("
                         + (f"{had} ids); pass the CSV given to run_study.py --flagged."
                            if had else "none); leave out --flagged."))
    suggested = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if {"id", "suggested_label"} <= set(reader.fieldnames or ()):
            suggested = {strip_extension(row["id"].strip()): row["suggested_label"].strip()
                         for row in reader}
    return Flagged(ids, suggested, f"`{Path(path).name}`")


# ---------------------------------------------------------------------------------------------
# helpers


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


def class_label(c: str) -> str:
    return f"{c} ({CLASS_NAMES[c]})" if c in CLASS_NAMES and c != CLASS_NAMES[c] else c


def images_at(data: EraserSet, ids: list[str], size: int) -> np.ndarray:
    """``(n, 6, size, size)`` uint8 of ``ids``, resized from the native images with the
    model's own resize (a few erasers: no resized copy of the whole set is cached)."""
    native = data.images(None, ids)
    if size == native.shape[-1]:
        return native
    return model_lib.resize_uint8(torch.from_numpy(native), size).numpy()


def grid_px(r: Report, data: EraserSet, cols: int = 6) -> int:
    """Pixels per tile of a full-width image grid: about :data:`GRID_DPI` at its size."""
    return min(data.image_size, round((r.style.double - 1.2) / cols * GRID_DPI))


def load_study_data(r: Report, study: optuna.Study, data_path: str | None,
                    cache_dir: str | None) -> StudyData | None:
    try:
        return StudyData(*study_data(study, data_path, cache_dir=cache_dir))
    except StudyError as exc:
        r.notes.append(f"the figures that need the erasers are left out: {exc}")
    except DataError as exc:
        r.notes.append("the figures that need the erasers are left out: the study's data "
                       f"cannot be loaded:\n{format_problems(exc.problems)}")
    return None


# ---------------------------------------------------------------------------------------------
# 1. data


def balance(r: Report, study: optuna.Study, sd: StudyData | None) -> None:
    """The class-balance table (every part of the split when the data are here) and its
    figure."""
    sec = SECTIONS[0]
    s = study.user_attrs.get("data", {})
    n = max(s.get("erasers", 0), 1)
    if sd is None:
        rows = [{"group": g, "erasers": s[k], "share": f"{100 * s[k] / n:.1f} %"}
                for g, k in (("defective", "defect"), ("print error (X=1)", "print"),
                             ("physical defect (Y=1)", "physical")) if k in s]
        rows += [{"group": f"class {class_label(c)}", "erasers": k,
                  "share": f"{100 * k / n:.1f} %"} for c, k in s.get("classes", {}).items()]
        counts = {"all": dict(s.get("classes", {}))}
        names = list(counts["all"])
    else:
        data, parts = sd.data, {"all": sd.data.ids, **sd.parts()}
        row = {k: i for i, k in enumerate(data.ids)}
        cls = np.array(class_of(data))
        names = class_list(data)
        groups = [("defective", lambda t, c: int(t.max(axis=1).sum()))]
        if data.label_kind == MULTICLASS:
            groups += [("print error (X=1)", lambda t, c: int(t[:, 0].sum())),
                       ("physical defect (Y=1)", lambda t, c: int(t[:, 1].sum()))]
        groups += [(f"class {class_label(k)}", lambda t, c, k=k: int((c == k).sum()))
                   for k in names]
        idx = {p: np.array([row[k] for k in ids], dtype=np.int64) for p, ids in parts.items()}
        rows = []
        for g, count in groups:
            out: dict = {"group": g}
            for p, i in idx.items():
                out[p] = count(data.targets[i], cls[i])
                if p == "all":
                    out["share"] = f"{100 * out[p] / max(len(i), 1):.1f} %"
            rows.append(out)
        counts = {p: Counter(cls[i].tolist()) for p, i in idx.items() if p != "all"}
    if not rows:
        return
    r.table(sec, "class_balance", rows, "Class balance (given labels)"
            + (", overall and in each part of the split." if sd else "."))
    if names:
        labels = {c: CLASS_NAMES.get(c, c) for c in names}
        r.figure(sec, plots.balance_figure(counts, labels, r.size("single", 0.72)),
                 "class_balance", "Class balance: share of each class"
                 + (" in each part of the split (erasers in brackets); the split is "
                    "stratified on the class." if sd else " (given labels)."))


def data_section(r: Report, study: optuna.Study, sd: StudyData | None,
                 flagged: Flagged | None, best: FrozenTrial) -> None:
    a = study.user_attrs
    s = a.get("data", {})
    sec = SECTIONS[0]
    if not s:
        r.add(sec, "The study stored no data summary.", "")
        return
    r.add(sec, f"{s.get('erasers')} labelled erasers ({s.get('label_kind')} labels), "
          f"{s.get('image_size')}x{s.get('image_size')} px, channels "
          f"{', '.join(s.get('channels', []))}. Source: `{s.get('source')}`.", "")
    sp = a.get("split", {})
    if sp:
        test = (f"; {sp['n_test']} more set aside as a test split before the folds were "
                "dealt" if sp.get("n_test") else "")
        r.add(sec, f"Split: {sp.get('n_train')} training / {sp.get('n_val')} validation "
              f"erasers, stratified on X_Y ({sp.get('k')} folds, fold {sp.get('fold', 0)} "
              f"held out, seed {sp.get('seed')}{test}; hash `{a.get('split_hash')}`).", "")
    balance(r, study, sd)
    if sd is not None:
        sample_grids(r, sd)
    label_noise(r, study, sd, flagged, best)


def sample_grids(r: Report, sd: StudyData) -> None:
    """One figure per class: a few training erasers, all six channels."""
    data = sd.data
    train = set(sd.split.train_ids())
    classes = sd.classes()
    px = grid_px(r, data)
    rng = np.random.default_rng(0)
    for c in class_list(data):
        members = [k for k in data.ids if k in train and classes[k] == c]
        if not members:
            continue
        picked = [members[i] for i in sorted(rng.choice(len(members), min(N_SAMPLES,
                                                        len(members)), replace=False))]
        fig = plots.channel_grid(images_at(data, picked, px), picked, width=r.style.double,
                                 max_height=r.style.max_height)
        r.figure(SECTIONS[0], fig, f"samples_{c}",
                 f"Class {class_label(c)}: {len(picked)} training erasers drawn at random, "
                 f"all six channels ({data.image_size} px, shown at {px} px).")


def label_noise(r: Report, study: optuna.Study, sd: StudyData | None,
                flagged: Flagged | None, best: FrozenTrial) -> None:
    sec = SECTIONS[0]
    n = study.user_attrs.get("n_flagged", 0)
    if not n:
        r.add(sec, "Label noise: no flagged list was used; `python label_issues.py` finds "
              "suspected mislabels, `python analyze_data.py` gives the full data analysis.", "")
        return
    weight = best.params.get("flagged_weight")
    r.add(sec, f"Label noise: {n} erasers were flagged as suspected mislabels (`python "
          "label_issues.py`, confident learning on out-of-fold predictions) and the search "
          "tuned their loss weight (`flagged_weight`, 0 = dropped"
          + (f"; the best trial's: {weight:.2f}" if weight is not None else "") + ").", "")
    if flagged is None:
        r.notes.append("label-noise examples left out: the study stores only a fingerprint "
                       "of its flagged list; pass it again with --flagged label_issues.csv.")
        return
    if sd is None:
        return
    classes, part = sd.classes(), sd.part_of()
    shown = [k for k in flagged.ids if k in classes][:N_FLAGGED]
    rows = [{"id": k, "labelled": classes[k], "suggested": flagged.suggested.get(k, "?"),
             "part": part.get(k, "-")} for k in shown]
    labels = [f"{x['id']}\nlabelled {x['labelled']}"
              + (f"\nsuggested {x['suggested']}" if x["suggested"] != "?" else "")
              for x in rows]
    fig = plots.channel_grid(images_at(sd.data, shown, grid_px(r, sd.data)), labels,
                             width=r.style.double, max_height=r.style.max_height)
    r.figure(sec, fig, "label_noise",
             f"Label noise: the {len(shown)} most suspicious of the {len(flagged.ids)} "
             f"erasers flagged as suspected mislabels ({flagged.source}), all six channels, "
             "with the label given"
             + (" and the one confident learning suggests." if flagged.suggested else "."))
    r.table(sec, "label_noise", rows, "The label-noise examples of the figure above: given "
            "and suggested label, and the part of the split each eraser is in.")


# ---------------------------------------------------------------------------------------------
# 2. methodology


ARCH_SETTINGS = {
    "backbone": "backbone (timm, ImageNet weights)",
    "channels": "input channels",
    "input_size": "input size (px)",
    "widths": "filters per block",
    "kernel_sizes": "kernel size per block",
    "convs_per_block": "convolutions per block",
    "activation": "activation",
    "pool": "pooling after each block",
    "spatial_dropout": "spatial dropout",
    "stem": "stem",
    "head_pool": "head pooling",
    "dense_width": "hidden dense units (0: linear head)",
    "dense_dropout": "dropout before the output layer",
    "task": "output head",
    "strides": "feature stages (stride)",
    "memory": "memory bank (good patches)",
    "head_width": "hidden channels of the patch head",
}
TASK_HEADS = {"multilabel": "2 sigmoids (print, physical)", "binary": "1 sigmoid (defect)",
              "multiclass": "softmax over the 4 X_Y classes"}
STEMS = {"single": "one first block for all channels",
         "split": "split: NORMAL and the other channels each get their own first block"}


def architecture_rows(cfg: RunConfig, best: FrozenTrial) -> list[dict]:
    """One row per field of the architecture (scratch ``CNNConfig`` or ``BackboneConfig``),
    then what follows from it: depth, last feature map, backbone training, size."""
    arch = cfg.model
    rows = []
    for f in dataclasses.fields(arch):
        v = getattr(arch, f.name)
        value = (TASK_HEADS.get(v, v) if f.name == "task" else STEMS.get(v, v)
                 if f.name == "stem" else fmt(v))
        rows.append({"setting": ARCH_SETTINGS.get(f.name, f.name.replace("_", " ")),
                     "value": value, "field": f.name})
    if isinstance(arch, PatchConfig):
        rows += [{"setting": "patches per side", "value": f"{arch.grid}x{arch.grid}",
                  "field": ""},
                 {"setting": "backbone training", "field": "",
                  "value": "frozen (its features computed once; the head trains)"}]
    elif isinstance(arch, BackboneConfig):
        scale = cfg.train.backbone_lr_scale
        rows.append({"setting": "backbone training", "field": "backbone_lr_scale",
                     "value": "frozen (only the head trains)" if scale == 0 else
                     f"fine-tuned at {scale:.3g} x the head's learning rate"})
    else:
        rows += [{"setting": "conv blocks (depth)", "value": str(arch.depth), "field": ""},
                 {"setting": "last feature map (px)",
                  "value": f"{arch.feature_size}x{arch.feature_size}", "field": ""}]
    a = best.user_attrs
    if a.get("params"):
        rows.append({"setting": "trainable parameters", "value": f"{a['params']:,}",
                     "field": ""})
    if a.get("macs"):
        rows.append({"setting": "multiply-adds per eraser",
                     "value": f"{a['macs'] / 1e6:.1f} M", "field": ""})
    return rows


def methodology_section(r: Report, best: FrozenTrial, cfg: RunConfig | None) -> None:
    sec = SECTIONS[1]
    a = best.user_attrs
    r.add(sec, f"Best trial {best.number}: `{a.get('architecture', '?')}`, "
          f"{a.get('params', 0):,} parameters, {a.get('macs', 0) / 1e6:.1f} M multiply-adds "
          "per eraser.", "")
    if cfg is not None:
        kind = ("a pretrained timm backbone's local features scored patch by patch"
                if isinstance(cfg.model, PatchConfig) else
                "a pretrained timm backbone with an inspection head"
                if isinstance(cfg.model, BackboneConfig) else "a CNN trained from scratch")
        rows = architecture_rows(cfg, best)
        r.facts.architecture = [(x["setting"], str(x["value"])) for x in rows]
        r.table(sec, "architecture", rows,
                f"Architecture of the best trial: {kind} (`field`: its name in the run "
                "file, `python train.py --print-config`).")


# ---------------------------------------------------------------------------------------------
# 3. experimental setup


def best_config(study: optuna.Study, best: FrozenTrial) -> RunConfig | None:
    """The best trial's whole run configuration, or None when it does not replay in this
    version's search space (the report then leaves those tables out)."""
    try:
        return trial_config(best, study.user_attrs.get("space", {}))
    except ValueError as exc:
        log.warning("%s: the configuration tables are left out", exc)
        return None


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


def augmentation_text(a: AugmentConfig) -> str:
    ops = [("flips and 90-degree turns" if a.flips else ""),
           (f"rotation up to {a.rotate_deg:.3g} deg" if a.rotate_deg else ""),
           (f"shift up to {100 * a.translate:.3g} % of the side" if a.translate else ""),
           (f"zoom +-{100 * a.scale:.3g} %" if a.scale else ""),
           (f"shear up to {a.shear_deg:.3g} deg" if a.shear_deg else ""),
           (f"brightness +-{a.brightness:.3g}" if a.brightness else ""),
           (f"contrast +-{100 * a.contrast:.3g} %" if a.contrast else ""),
           (f"gamma +-{100 * a.gamma:.3g} %" if a.gamma else ""),
           (f"blur sigma up to {a.blur_sigma:.3g} px" if a.blur_sigma else ""),
           (f"Gaussian noise sigma {a.noise_std:.3g}" if a.noise_std else "")]
    return ", ".join(o for o in ops if o) + f"; each op with probability {a.p:.2g}"


def setup_section(r: Report, study: optuna.Study, best: FrozenTrial,
                  trials: list[FrozenTrial], cfg: RunConfig | None,
                  sd: StudyData | None) -> None:
    sec = SECTIONS[2]
    space = study.user_attrs.get("space", {})
    metric = space.get("metric", "objective")
    r.add(sec, f"Objective: validation `{metric}` (maximised). Each trial trains up to "
          f"{space.get('epochs', '?')} epochs with early stopping (patience "
          f"{space.get('patience', '?')}) and is pruned on its per-epoch validation score.", "")
    rows = [{"parameter": k, "searched over": v, "best trial": fmt(best.params.get(k, "-"))}
            for k, v in distributions(study).items()]
    r.table(sec, "search_space", rows, "Search space and the best trial's hyperparameters.")
    bounds = [{"bound": k, "value": fmt(v)} for k, v in space.items()]
    if bounds:
        r.table(sec, "study_bounds", bounds, "Bounds of the study (stored with it).")
    if cfg is not None:
        rows = [{"setting": k, "value": fmt(v)} for k, v in cfg.to_dict()["train"].items()]
        r.table(sec, "best_training", rows, "Training settings of the best trial (loss, "
                "optimiser, schedule...).")
        augmentation(r, cfg, sd)
    hardware_section(r, trials)


def augmentation(r: Report, cfg: RunConfig, sd: StudyData | None) -> None:
    """The best trial's augmentation in words, and a few of its draws on one eraser."""
    sec = SECTIONS[2]
    aug = build_augmenter(cfg.augment)
    if aug is None:
        r.add(sec, "Augmentation: the best trial trains without augmentation.", "")
        return
    r.add(sec, f"Augmentation of the best trial: {augmentation_text(cfg.augment)}.", "")
    if sd is None:
        return
    classes = sd.classes()
    train = sd.split.train_ids()
    eraser = next((k for k in train if classes[k] == "1_1"),
                  next((k for k in train if classes[k] != class_list(sd.data)[0]), train[0]))
    size, channels = cfg.model.input_size, cfg.model.channels
    one = images_at(sd.data, [eraser], size)[:, model_lib.channel_indices(channels)]
    x = torch.from_numpy(one).float().div(255).repeat(N_DRAWS, 1, 1, 1)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        drawn = (aug(x).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    tiles = np.concatenate([one, drawn])  # (draws, channels, S, S)
    names = ["original", *[f"draw {i + 1}" for i in range(N_DRAWS)]]
    if len(channels) < len(names):  # few channels: one row per channel, draws side by side
        tiles, names, channels = tiles.transpose(1, 0, 2, 3), list(channels), names
    fig = plots.channel_grid(tiles, names, width=r.style.double,
                             max_height=r.style.max_height, channels=channels)
    r.figure(sec, fig, "augmentation",
             f"Augmentation examples: one training eraser ({eraser}, class "
             f"{class_label(classes[eraser])}) as the best trial's network sees it ({size} px, "
             f"its channels {', '.join(cfg.model.channels)}), unaugmented and in {N_DRAWS} "
             "random draws of its augmentation.")


def hardware_section(r: Report, trials: list[FrozenTrial]) -> None:
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
    r.table(SECTIONS[2], "timing", rows, "Hardware and timing.")


# ---------------------------------------------------------------------------------------------
# 4. results: the study


def study_figures(r: Report, study: optuna.Study, metric: str) -> None:
    """The study-level figures (``reporting.plots``), each skipped with a note when there is
    nothing to draw yet."""
    sec = SECTIONS[3]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    r.figure(sec, plots.history_figure(study, metric, r.size("single", 0.72), titled=False),
             "optimization_history", f"Optimisation history: validation {metric} of each "
             "completed trial, the best so far, and where pruned trials stood when stopped.")
    importances, why_not = plots.param_importances(study)
    r.facts.importances = dict(importances or {})
    if importances:
        rows = [{"parameter": k, "importance": round(v, 4)} for k, v in importances.items()]
        top = min(TOP_PARAMS, len(rows))
        r.table(sec, "param_importances", rows, f"Parameter importances (top {top} here; "
                "all in the files).", shown=rows[:top])
        w, _ = r.size("single", 1)
        fig = plots.importance_figure(importances, metric,
                                      (w, min(0.22 * top * r.style.font / 8 + 0.75,
                                              r.style.max_height)),
                                      top=TOP_PARAMS, titled=False)
        r.figure(sec, fig, "param_importances",
                 f"Importance of the {top} most important of {len(rows)} parameters over "
                 f"{len(done)} completed trials (Optuna's default evaluator, "
                 f"{plots.IMPORTANCE_METHOD}; importances sum to 1); few trials make them "
                 "rough.")
        try:
            fig = plots.parallel_figure(study, list(importances)[:TOP_PARAMS], metric,
                                        r.size("double", 0.45), titled=False)
            r.figure(sec, fig, "parallel_coordinates",
                     f"Parallel coordinates of the {top} most important parameters: each "
                     "line is a completed trial, coloured by its validation score (the best "
                     "in red); numeric axes span the searched range, and a line breaks "
                     "where its trial had no such parameter.")
        except (ValueError, RuntimeError) as exc:
            r.notes.append(f"parallel coordinates not drawn: {exc}")
    else:
        r.notes.append(f"parameter importances not computed: {why_not}")
    fig = plots.intermediate_figure(study, metric, r.size("single", 0.72), titled=False)
    if fig is None:
        r.notes.append("no trial reported intermediate values.")
    else:
        r.figure(sec, fig, "intermediate_values",
                 f"Intermediate values: the best validation {metric} so far after each epoch "
                 "of every trial, what the pruner compares; pruned trials stop early.")


def selection_caveat(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """Why the best validation score overstates what new erasers will see, in numbers."""
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    n_val = study.user_attrs.get("split", {}).get("n_val", "?")
    return (f"The same {n_val} validation erasers chose this trial among {done} completed "
            "ones, its best epoch and its thresholds, so its validation figures are "
            "optimistic for new erasers (more so with more trials and a smaller split). "
            + ("The test split below gives the unbiased figure; "
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
    top = sorted((x for x in rows if x["state"] == "complete"),
                 key=lambda x: -float(x[metric]))[:5]
    columns = ["trial", metric, "defect_ap", "graded_f1", "best_epoch", "params",
               "architecture"]
    write_csv(r.out / "trials.csv", rows)
    (r.out / "trials.tex").write_text(latex_table(top, columns))
    r.files += ["trials.csv", "trials.tex"]
    r.add(SECTIONS[3], "*Table {table}. Top trials (validation; LaTeX: `trials.tex`; all "
          "trials: `trials.csv`).*", "", markdown_table(top, columns), "")


# ---------------------------------------------------------------------------------------------
# 4. results: the best trial, curves from its history, metrics from its weights


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


def per_class_metrics(probs: np.ndarray, targets: np.ndarray,
                      thresholds: dict[str, float]) -> list[dict]:
    """AUC-PR, AUROC, precision, recall and F1 per class of ``model.PROB_NAMES``."""
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


def predicted_classes(probs: np.ndarray, thresholds: dict, label_kind: str) -> np.ndarray:
    """Class index per eraser at the shipped thresholds: ``X_Y`` with X = p(print) >= its
    threshold and Y = p(physical) >= its own (good/defect with binary-only labels)."""
    p = np.asarray(probs)
    if label_kind != MULTICLASS:
        return (p[:, 3] >= thresholds.get("defect", 0.5)).astype(int)
    return (2 * (p[:, 0] >= thresholds.get("print_error", 0.5))
            + (p[:, 1] >= thresholds.get("physical_error", 0.5))).astype(int)


def xy_confusion(r: Report, given: np.ndarray, pred: np.ndarray, names: list[str]) -> None:
    sec = SECTIONS[3]
    k = len(names)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (given, pred), 1)
    rows = [{"labelled": names[i], **{f"predicted {names[j]}": int(cm[i, j])
                                      for j in range(k)}} for i in range(k)]
    what = "X_Y classes" if k == 4 else "classes"
    r.table(sec, "xy_confusion", rows, f"Confusion of the {what} on validation (rows: "
            "labelled, columns: predicted at the shipped thresholds).")
    r.figure(sec, plots.xy_confusion_figure(cm, names, r.size("single", 0.9),
                                            {c: CLASS_NAMES[c] for c in names
                                             if CLASS_NAMES.get(c, c) != c}),
             "xy_confusion", f"Confusion of the {what} on validation: labelled (rows) "
             "against predicted (columns) at the shipped thresholds (X: p(print) >= its "
             "threshold, Y: p(physical) >= its threshold); counts and row shares. "
             f"{int(np.trace(cm))} of {int(cm.sum())} erasers on the diagonal.")


def worst_errors(r: Report, sd: StudyData, val_ids: list[str], probs: np.ndarray,
                 given: np.ndarray, pred: np.ndarray, names: list[str]) -> None:
    """The validation erasers whose label the model contradicts most confidently."""
    sec = SECTIONS[3]
    joint = joint_probs(probs, sd.data.label_kind)
    p_given = joint[np.arange(len(given)), given]
    wrong = np.flatnonzero(pred != given)
    order = wrong[np.argsort(p_given[wrong], kind="stable")][:N_ERRORS]
    ids = [val_ids[i] for i in order]
    rows = [{"id": val_ids[i], "labelled": names[given[i]], "predicted": names[pred[i]],
             "p_labelled": round(float(p_given[i]), 3),
             "p_print": round(float(probs[i, 0]), 3),
             "p_physical": round(float(probs[i, 1]), 3)} for i in order]
    labels = [f"{x['id']}\n{x['labelled']} -> {x['predicted']}\np = {x['p_labelled']:.2f}"
              for x in rows]
    fig = plots.channel_grid(images_at(sd.data, ids, grid_px(r, sd.data)), labels,
                             width=r.style.double, max_height=r.style.max_height)
    r.figure(sec, fig, "worst_errors",
             f"Worst errors: the {len(ids)} validation erasers (of {len(wrong)} predicted "
             "wrongly at the shipped thresholds) whose label the best model contradicts most "
             "confidently, all six channels: labelled -> predicted class, and p, the model's "
             "probability of the labelled class.")
    r.table(sec, "worst_errors", rows, "The worst errors of the figure above with the "
            "model's probabilities.", columns=["id", "labelled", "predicted", "p_labelled",
                                               "p_print", "p_physical"])


def test_table(r: Report, rows: list[dict], test: dict, prevalence: dict[str, float]) -> None:
    nan = float("nan")
    both = [{"class": LABELS[name], "validation AUC-PR": x["auc_pr"],
             "test AUC-PR": round(test.get(f"{name}_ap", nan), 4),
             "test chance AUC-PR": round(prevalence[name], 4),
             "validation AUROC": x["auroc"],
             "test AUROC": round(test.get(f"{name}_auroc", nan), 4),
             "validation F1": x["f1"], "test F1": round(test.get(f"{name}_f1", nan), 4)}
            for name, x in zip(CLASSES, rows, strict=True)]
    graded = [b for b, name in zip(both, CLASSES, strict=True) if name in model_lib.GRADED]
    both.append({"class": "graded (mean of 3)", **{
        k: round(float(np.nanmean([b[k] for b in graded])), 4) for k in both[0] if k != "class"}})
    r.table(SECTIONS[3], "validation_vs_test", both,
            f"The same model on the test split ({test['n']} erasers set aside before the "
            "split: no trial, epoch or threshold choice saw them), at the same thresholds, "
            "next to validation; chance: the AUC-PR of a model that guesses (each class's "
            "share of the test erasers; chance AUROC is 0.5). The drop from validation is "
            "what choosing on the validation split cost.")


def best_trial_results(r: Report, best: FrozenTrial, artifact_dir: Path,
                       sd: StudyData) -> None:
    """Recompute the best trial's validation probabilities and draw what needs them."""
    sec = SECTIONS[3]
    try:
        ckpt = fetch_checkpoint(best, artifact_dir)
        net = model_lib.model_from_checkpoint(ckpt, f"trial {best.number}")
    except (StudyError, model_lib.CheckpointError) as exc:
        r.notes.append(f"validation figures of the best trial left out: {exc}")
        stored = [{"metric": k, "value": v} for k, v in sorted(best.user_attrs.items())
                  if isinstance(v, float) and k.endswith(("_ap", "_f1"))]
        r.table(sec, "stored_metrics", stored, "Validation metrics stored with the best "
                "trial.")
        return
    data, split = sd.data, sd.split
    val_ids = split.val_ids()
    probs = predict_set(net, data, val_ids)
    targets = validation_targets(data, val_ids)
    thresholds = dict(net.thresholds)
    truth = targets_to_truth(targets)
    rows = per_class_metrics(probs, targets, thresholds)
    graded = [x for x in rows if x["class"] != LABELS["defect"]]
    mean_ap = float(np.mean([x["auc_pr"] for x in graded]))
    mean_f1 = float(np.mean([x["f1"] for x in graded]))
    r.table(sec, "validation_metrics", rows,
            f"Validation results of the best trial (trial {best.number}, {len(val_ids)} "
            "erasers, recomputed from its stored weights at its stored thresholds). Graded: "
            f"mean AUC-PR {mean_ap:.3f}, mean F1 {mean_f1:.3f} over print error, physical "
            "error and no defect.")
    r.facts.validation = {
        **{f"{name}_{k}": x[col] for name, x in zip(CLASSES, rows, strict=True)
           for k, col in (("ap", "auc_pr"), ("f1", "f1"))},
        "graded_ap": mean_ap, "graded_f1": mean_f1}
    test = test_metrics(net, data, split)
    r.facts.test = dict(test or {})
    if test is not None:
        t_truth = targets_to_truth(validation_targets(data, split.test_ids()))
        test_table(r, rows, test, {n: float(t_truth[:, i].mean())
                                   for i, n in enumerate(CLASSES)})
    names = class_list(data)
    given = given_classes(targets, data.label_kind)
    pred = predicted_classes(probs, thresholds, data.label_kind)
    xy_confusion(r, given, pred, names)
    panels = r.size("double", 0.85)
    r.figure(sec, plots.class_panels("confusion", truth, probs, thresholds, panels),
             "confusion_matrices", "Confusion matrices per class (one-vs-all) at the chosen "
             "thresholds (validation): labelled rows, predicted columns; counts and row "
             "shares.")
    r.figure(sec, plots.class_panels("pr", truth, probs, thresholds, panels), "pr_curves",
             "Precision-recall per class (validation); the dot is the operating point, the "
             "dotted line the positive rate (a guessing model's precision).")
    r.figure(sec, plots.class_panels("roc", truth, probs, thresholds, panels), "roc_curves",
             "ROC per class (validation); the dot is the operating point, the dotted line "
             "chance.")
    r.figure(sec, plots.class_panels("sweep", truth, probs, thresholds, panels),
             "threshold_sweep", "Precision, recall and F1 against the decision threshold "
             "per class (validation); dashed: the chosen threshold.")
    worst_errors(r, sd, val_ids, probs, given, pred, names)


# ---------------------------------------------------------------------------------------------


def build_report(study: optuna.Study, best: FrozenTrial, out: Path, *,
                 storage: optuna.storages.BaseStorage, artifact_dir: Path,
                 data_path: str | None = None, cache_dir: str | None = None,
                 predict: bool = True, style: str = "paper",
                 flagged: Flagged | None = None,
                 manuscript: TitlePage | None = None) -> Report:
    """Write every table, figure and report.md into ``out`` (staged: all or nothing), every
    figure in ``style`` (``plots.STYLES``). ``flagged``: the study's flagged list
    (:func:`read_flagged_list`), for the label-noise examples. ``manuscript``: also the
    draft ``manuscript.tex`` with this title page (``reporting.manuscript``)."""
    trials = study.get_trials(deepcopy=False)
    metric = study.user_attrs.get("space", {}).get("metric", "objective")
    with staged_output(out) as stage, plots.figure_style(style) as st:
        r = Report(stage, st)
        sd = load_study_data(r, study, data_path, cache_dir)
        cfg = best_config(study, best)
        data_section(r, study, sd, flagged, best)
        methodology_section(r, best, cfg)
        setup_section(r, study, best, trials, cfg, sd)
        r.add(SECTIONS[3], f"Best trial: {best.number}, validation {metric} "
              f"{best.value:.4f}.", "", selection_caveat(study, trials), "")
        trials_table(r, trials, metric)
        study_figures(r, study, metric)
        history = trial_history(best, storage, artifact_dir)
        if history:
            r.figure(SECTIONS[3], plots.curves_figure(history, metric, r.size("double", 0.4)),
                     "best_trial_curves", f"Learning curves of the best trial: loss (left) "
                     f"and AUC-PR (right) per epoch, training vs validation ({len(history)} "
                     f"epochs; dotted: the best epoch, "
                     f"{best.user_attrs.get('best_epoch', '?')}, whose weights are kept).")
        else:
            r.notes.append(f"the best trial's history.json artifact is not in {artifact_dir}; "
                           "learning curves left out (pass --artifact-dir).")
        if predict and sd is not None:
            best_trial_results(r, best, artifact_dir, sd)
        (stage / "report.md").write_text(report_md(r, study))
        r.files.append("report.md")
        if manuscript is not None:
            (stage / "manuscript.tex").write_text(manuscript_tex(
                study, best, cfg, r.files, r.facts, manuscript,
                augmentation_text(cfg.augment) if cfg and build_augmenter(cfg.augment)
                else ""))
            r.files.append("manuscript.tex")
    r.out = out
    return r


def report_md(r: Report, study: optuna.Study) -> str:
    lines = [f"# Study `{study.study_name}`", "",
             "Figures and tables for the write-up, in its order. Regenerate with `python "
             f"report.py --study {study.study_name} --style {r.style.name}`. Figures are "
             f"drawn {r.style.single} or {r.style.double} inches wide with "
             f"{r.style.font:g} pt text (PDF for the paper, 300 dpi PNG); tables are booktabs "
             "LaTeX (`\\usepackage{booktabs}`, then `\\input{NAME.tex}`) and CSV.", ""]
    for sec in SECTIONS:
        lines += [f"## {sec}", "", *r.sections.get(sec, ["(nothing stored)", ""])]
    if r.notes:
        lines += ["## Left out", "", *[f"- {n}" for n in r.notes], ""]
    tables = sorted(f for f in r.files if f.endswith(".csv"))
    lines += ["## Files", "", "Tables as CSV: " + ", ".join(f"`{f}`" for f in tables) + ".",
              ""]
    counters: Counter = Counter()

    def number(m: re.Match) -> str:
        counters[m.group(1)] += 1
        return str(counters[m.group(1)])

    return re.sub(r"\{(figure|table)\}", number, "\n".join(lines))
