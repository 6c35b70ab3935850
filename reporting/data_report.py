"""The data analysis report (``analyze_data.py``): see the data before searching.

:func:`analyze` writes, into one folder: class-balance tables (defect, print X, physical Y,
every ``X_Y`` class; overall, and in the training and validation parts of the default split),
per-channel mean/std/min/max (overall and per class), per-channel intensity histograms by
class, a sample grid per class with all six channels, the mean image per class and channel (and
its difference to the good erasers), a per-channel separability table (AUROC of simple image
statistics for print and physical defects), and ``report.md`` linking all of it with one-line
findings computed from the data.

The analysis runs on a resized copy (``--size``, default 128 px) from the decoded-image cache,
so it takes seconds on a real delivery. It uses numpy, matplotlib and scikit-learn, and
neither the model nor the search.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from sklearn.metrics import roc_auc_score

from data.cache import Progress
from data.dataset import EraserSet
from data.labels import MULTICLASS
from data.split import SplitError, make_split
from model.channels import CHANNELS, CLASS_CODES
from reporting import plots
from reporting.tables import markdown_table, staged_output, write_csv

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

CHUNK = 128  # erasers read from the cache at a time: bounded memory on any delivery
CLASS_NAMES = {"0_0": "good", "0_1": "physical only", "1_0": "print only",
               "1_1": "print + physical", "good": "good", "defect": "defective"}
# Per-eraser statistics whose AUROC tells how well a channel separates a defect type. The
# centre is the middle half of the crop: the eraser, mostly without belt or neighbours.
STATISTICS = {
    "central_mean": "mean intensity of the central half",
    "central_std": "std of the central half (texture, marks, relief)",
    "edge_energy": "mean absolute gradient of the central half (edges, cracks, print)",
}
DPI = 100


@dataclass
class Analysis:
    """What :func:`analyze` computed (plain data) and the files it wrote."""

    summary: dict
    balance: list[dict]
    channel_stats: list[dict]
    separability: list[dict]
    findings: list[str]
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# the analysis


def class_of(data: EraserSet) -> list[str]:
    """Class per eraser: the ``X_Y`` code, or good/defect with binary-only labels."""
    if data.label_kind == MULTICLASS:
        return data.codes
    return ["defect" if d else "good" for d in data.defect]


def class_list(data: EraserSet) -> list[str]:
    return list(CLASS_CODES) if data.label_kind == MULTICLASS else ["good", "defect"]


def balance_table(data: EraserSet, parts: dict[str, Sequence[str]]) -> list[dict]:
    """Counts and shares of every label group in each named part (e.g. all/train/validation).

    One row per (group, part): group is ``defect``, ``print (X=1)``, ``physical (Y=1)`` or an
    ``X_Y`` class (``good``/``defect`` with binary-only labels).
    """
    row_of = {k: i for i, k in enumerate(data.ids)}
    classes = np.array(class_of(data))
    rows = []
    for part, ids in parts.items():
        idx = np.array([row_of[k] for k in ids], dtype=np.int64)
        n = len(idx)
        groups: list[tuple[str, int]] = [("defect", int(data.defect[idx].sum()))]
        if data.label_kind == MULTICLASS:
            groups += [("print (X=1)", int(data.targets[idx, 0].sum())),
                       ("physical (Y=1)", int(data.targets[idx, 1].sum()))]
        groups += [(c, int((classes[idx] == c).sum())) for c in class_list(data)]
        for group, count in groups:
            rows.append({"part": part, "erasers": n, "group": group, "count": count,
                         "share": round(count / n, 4) if n else 0.0})
    return rows


@dataclass
class _Accumulator:
    """Running per-class, per-channel pixel statistics over chunks of erasers."""

    classes: list[str]
    size: int
    n: dict = field(default_factory=dict)
    s: dict = field(default_factory=dict)
    s2: dict = field(default_factory=dict)
    lo: dict = field(default_factory=dict)
    hi: dict = field(default_factory=dict)
    hist: dict = field(default_factory=dict)
    mean_img: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = len(CHANNELS)
        for k in self.classes:
            self.n[k] = 0
            self.s[k] = np.zeros(c)
            self.s2[k] = np.zeros(c)
            self.lo[k] = np.full(c, 255)
            self.hi[k] = np.zeros(c, dtype=np.int64)
            self.hist[k] = np.zeros((c, 256), dtype=np.int64)
            self.mean_img[k] = np.zeros((c, self.size, self.size))

    def add(self, images: np.ndarray, classes: np.ndarray) -> None:
        for k in np.unique(classes):
            x = images[classes == k]  # (m, 6, S, S) uint8
            xf = x.astype(np.float64)
            self.n[k] += len(x)
            self.s[k] += xf.sum(axis=(0, 2, 3))
            self.s2[k] += (xf * xf).sum(axis=(0, 2, 3))
            self.lo[k] = np.minimum(self.lo[k], x.min(axis=(0, 2, 3)))
            self.hi[k] = np.maximum(self.hi[k], x.max(axis=(0, 2, 3)))
            for ch in range(x.shape[1]):
                self.hist[k][ch] += np.bincount(x[:, ch].ravel(), minlength=256)
            self.mean_img[k] += xf.sum(axis=0)

    def rows(self) -> list[dict]:
        """mean/std/min/max per channel (0-255 units), overall and per class."""
        groups = {"all": self.classes, **{k: [k] for k in self.classes}}
        pixels = self.size * self.size
        out = []
        for name, members in groups.items():
            members = [k for k in members if self.n[k]]
            if not members:
                continue
            n = sum(self.n[k] for k in members) * pixels
            s = sum(self.s[k] for k in members)
            s2 = sum(self.s2[k] for k in members)
            mean = s / n
            std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
            lo = np.min([self.lo[k] for k in members], axis=0)
            hi = np.max([self.hi[k] for k in members], axis=0)
            for ch, ch_name in enumerate(CHANNELS):
                out.append({"class": name, "erasers": n // pixels, "channel": ch_name,
                            "mean": round(float(mean[ch]), 2), "std": round(float(std[ch]), 2),
                            "min": int(lo[ch]), "max": int(hi[ch])})
        return out


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per eraser and channel: the :data:`STATISTICS`, each ``(n, 6)``."""
    s = images.shape[-1]
    lo, hi = s // 4, s - s // 4
    centre = images[:, :, lo:hi, lo:hi].astype(np.float32)
    gy = np.abs(np.diff(centre, axis=2)).mean(axis=(2, 3))
    gx = np.abs(np.diff(centre, axis=3)).mean(axis=(2, 3))
    return {"central_mean": centre.mean(axis=(2, 3)), "central_std": centre.std(axis=(2, 3)),
            "edge_energy": (gx + gy) / 2}


def separability_table(stats: dict[str, np.ndarray], targets: dict[str, np.ndarray]
                       ) -> list[dict]:
    """AUROC of each statistic and channel for each target (one-vs-rest).

    ``auroc`` is scikit-learn's (0.5 = no signal); ``separation`` is ``max(auroc, 1 - auroc)``
    so that a statistic that is *lower* on defects counts as well, and ``direction`` says which.
    """
    rows = []
    for target, y in targets.items():
        if not 0 < y.sum() < len(y):
            continue  # AUROC is undefined without both classes
        for stat, values in stats.items():
            for ch, ch_name in enumerate(CHANNELS):
                auc = float(roc_auc_score(y, values[:, ch]))
                rows.append({"target": target, "statistic": stat, "channel": ch_name,
                             "auroc": round(auc, 4), "separation": round(max(auc, 1 - auc), 4),
                             "direction": "higher on defects" if auc >= 0.5
                             else "lower on defects"})
    return rows


def _sample_ids(ids: Sequence[str], classes: Sequence[str], cls: str, n: int,
                seed: int) -> list[str]:
    members = [k for k, c in zip(ids, classes, strict=True) if c == cls]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(members), size=min(n, len(members)), replace=False)
    return [members[i] for i in sorted(picked)]


# About 80 lines: the report's tables and figures in the order report.md lists them.
def analyze(data: EraserSet, out: str | Path, *, size: int = 128, samples: int = 4,
            k: int = 5, seed: int = 0, progress: Progress | None = None) -> Analysis:
    """Analyse a labelled :class:`EraserSet` and write the report folder ``out``.

    ``size``: side the images are analysed at (a resized cached copy); ``samples``: erasers per
    class in the sample grids; ``k``/``seed``: the split whose parts the balance table shows
    (fold 0 is the validation part, as in ``run_study.py``'s default). ``progress`` is called
    with ``(done, total)`` erasers. Files appear in ``out`` only once all are written.
    """
    if data.targets is None:
        raise ValueError("the analysis needs labels")
    size = min(size, data.image_size)
    classes = np.array(class_of(data))
    names = class_list(data)

    try:
        split = make_split(data.ids, data.codes, k=k, seed=seed)
    except ValueError as exc:  # scikit-learn: a class smaller than k everywhere
        raise SplitError(f"{len(data)} erasers cannot be dealt into {k} stratified folds "
                         f"({exc}); use fewer --folds.") from None
    parts = {"all": data.ids, "train": split.train_ids(0), "validation": split.val_ids(0)}
    balance = balance_table(data, parts)

    acc = _Accumulator(names, size)
    stats: dict[str, list[np.ndarray]] = {s: [] for s in STATISTICS}
    total = len(data.ids)
    for start in range(0, total, CHUNK):
        ids = data.ids[start:start + CHUNK]
        images = data.images(size, ids)
        acc.add(images, classes[start:start + CHUNK])
        for name, values in image_statistics(images).items():
            stats[name].append(values)
        if progress is not None:
            progress(min(start + CHUNK, total), total)
    per_eraser = {s: np.concatenate(v) for s, v in stats.items()}

    targets = {"defect": data.defect.astype(int)}
    if data.label_kind == MULTICLASS:
        targets = {"print": data.targets[:, 0].astype(int),
                   "physical": data.targets[:, 1].astype(int), **targets}
    separability = separability_table(per_eraser, targets)
    channel_rows = acc.rows()
    duplicates = _duplicates(data)

    summary = {
        **data.summary(), "analysis_size": size,
        "split": {"k": k, "seed": seed, "fold": 0, "hash": split.hash,
                  "n_train": len(parts["train"]), "n_val": len(parts["validation"])},
        "duplicates": duplicates,
    }
    findings = _findings(data, balance, channel_rows, separability, duplicates, split.k)
    analysis = Analysis(summary=summary, balance=balance, channel_stats=channel_rows,
                        separability=separability, findings=findings)

    with staged_output(out) as stage:
        files = analysis.files
        files.append(write_csv(stage / "class_balance.csv", balance).name)
        files.append(write_csv(stage / "channel_stats.csv", channel_rows).name)
        files.append(write_csv(stage / "separability.csv", separability).name)
        files.append(_plot_balance(balance, names, stage / "class_balance.png").name)
        files.append(_plot_histograms(acc, stage / "histograms.png").name)
        mean_imgs = {c: acc.mean_img[c] / acc.n[c] for c in names if acc.n[c]}
        files.append(_plot_mean_images(mean_imgs, size, stage / "mean_images.png").name)
        if len(mean_imgs) > 1:
            files.append(_plot_mean_difference(mean_imgs, names[0],
                                               stage / "mean_difference.png").name)
        files.append(_plot_separability(separability, stage / "separability.png").name)
        sample_files = {}
        for c in names:
            picked = _sample_ids(data.ids, classes.tolist(), c, samples, seed)
            if picked:
                name = f"samples_{c}.png"
                _plot_samples(data.images(size, picked), picked,
                              f"Class {c} ({CLASS_NAMES.get(c, c)}): {len(picked)} random "
                              f"erasers, all six channels ({size} px)", stage / name)
                sample_files[c] = name
                files.append(name)
        (stage / "summary.json").write_text(json.dumps(
            {**summary, "findings": findings, "balance": balance,
             "channel_stats": channel_rows, "separability": separability}, indent=1))
        files.append("summary.json")
        (stage / "report.md").write_text(_report_md(analysis, sample_files, names))
        files.append("report.md")
    return analysis


def _duplicates(data: EraserSet) -> dict:
    """Byte-identical images (from the cache's digests); conflicting labels among them."""
    digest = dict(zip(data.store.ids, data.store.digests, strict=True))
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(data.ids):
        groups.setdefault(digest[k], []).append(i)
    dup = [g for g in groups.values() if len(g) > 1]
    codes = data.codes
    conflicting = [g for g in dup if len({codes[i] for i in g}) > 1]
    return {"groups": len(dup), "erasers": sum(len(g) for g in dup),
            "conflicting_groups": len(conflicting),
            "examples": [[data.ids[i] for i in g] for g in (conflicting or dup)[:5]]}


def _findings(data: EraserSet, balance: list[dict], channel_rows: list[dict],
              separability: list[dict], duplicates: dict, k: int) -> list[str]:
    """One-line observations, every number computed from the data."""
    out = []
    overall = {r["group"]: r for r in balance if r["part"] == "all"}
    n = len(data.ids)
    d = overall["defect"]
    line = f"{n} erasers, {d['count']} defective ({100 * d['share']:.1f} %)"
    if data.label_kind == MULTICLASS:
        p, y = overall["print (X=1)"], overall["physical (Y=1)"]
        rare = min(CLASS_CODES, key=lambda c: overall[c]["count"])
        line += (f"; print errors {p['count']} ({100 * p['share']:.1f} %), physical defects "
                 f"{y['count']} ({100 * y['share']:.1f} %); rarest class {rare} "
                 f"({CLASS_NAMES[rare]}) with {overall[rare]['count']} erasers "
                 f"({100 * overall[rare]['share']:.1f} %).")
        good = overall["0_0"]["count"]
        out.append(line)
        if d["count"]:
            out.append(f"Imbalance: {good / max(d['count'], 1):.1f} good erasers per "
                       "defective one; weight the loss or sample by class "
                       "(the search tries both).")
    else:
        out.append(line + "; binary labels only (print and physical cannot be told apart).")
    val = {r["group"]: r["share"] for r in balance if r["part"] == "validation"}
    drift = max(abs(val[g] - overall[g]["share"]) for g in val)
    out.append(f"The stratified split (k={k}, fold 0 for validation) keeps every group's share "
               f"within {100 * drift:.1f} percentage points of the whole set.")

    all_rows = [r for r in channel_rows if r["class"] == "all"]
    bright = max(all_rows, key=lambda r: r["mean"])
    dark = min(all_rows, key=lambda r: r["mean"])
    out.append(f"Brightest channel {bright['channel']} (mean {bright['mean']:.0f} of 255), "
               f"darkest {dark['channel']} (mean {dark['mean']:.0f}); normalise per channel.")
    for target in ("print", "physical", "defect"):
        rows = [r for r in separability if r["target"] == target]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["separation"])
        what = {"print": "print errors", "physical": "physical defects",
                "defect": "defective erasers"}[target]
        out.append(f"{best['channel']} separates {what} best: AUROC of its "
                   f"{best['statistic'].replace('_', ' ')} = {best['auroc']:.2f} "
                   f"({best['direction']}).")
    if duplicates["groups"]:
        out.append(f"{duplicates['erasers']} erasers share byte-identical images in "
                   f"{duplicates['groups']} group(s), {duplicates['conflicting_groups']} with "
                   f"conflicting labels (e.g. {', '.join(duplicates['examples'][0])}).")
    else:
        out.append("No two erasers have byte-identical images.")
    return out


# ---------------------------------------------------------------------------------------------
# figures


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_balance(balance: list[dict], names: list[str], path: Path) -> Path:
    groups = ["defect", *[g for g in ("print (X=1)", "physical (Y=1)")
                          if any(r["group"] == g for r in balance)], *names]
    parts = ["all", "train", "validation"]
    share = {(r["part"], r["group"]): 100 * r["share"] for r in balance}
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=DPI)
    x = np.arange(len(groups))
    for i, part in enumerate(parts):
        n = next(r["erasers"] for r in balance if r["part"] == part)
        ax.bar(x + (i - 1) * 0.27, [share[(part, g)] for g in groups], 0.27,
               label=f"{part} ({n} erasers)")
    ax.set_xticks(x, groups, fontsize=8)
    ax.set(ylabel="share of erasers (%)", title="Class balance before and after the split")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_histograms(acc: _Accumulator, path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), dpi=DPI, sharex=True)
    for ch, ax in enumerate(axes.ravel()):
        for k in acc.classes:
            h = acc.hist[k][ch]
            if h.sum():
                ax.plot(np.arange(256), 100 * h / h.sum(), lw=1,
                        label=f"{k} ({CLASS_NAMES.get(k, k)})")
        ax.set(title=CHANNELS[ch], yscale="log", xlim=(0, 255))
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("intensity (0-255)")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of pixels (%, log)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Pixel intensity per channel and class", fontsize=10)
    return _save(fig, path)


def _plot_tiles(tiles: np.ndarray, row_labels: Sequence[str], title: str, path: Path, *,
                cmap: str = "gray", vmin: float = 0, vmax: float = 255,
                colorbar: str | None = None) -> Path:
    """Erasers (or class means) as rows, their channels as columns: the report's grid."""
    with plots.figure_style("paper"):
        fig = plots.channel_grid(tiles, row_labels, width=7.0, title=title, cmap=cmap,
                                 vmin=vmin, vmax=vmax, colorbar=colorbar)
        fig.savefig(path, dpi=DPI)  # the grid lays itself out: no tight_layout
    plt.close(fig)
    return path


def _plot_mean_images(mean_imgs: dict[str, np.ndarray], size: int, path: Path) -> Path:
    rows = list(mean_imgs)
    return _plot_tiles(np.stack([mean_imgs[k] for k in rows]),
                       [f"{k}\n{CLASS_NAMES.get(k, k)}" for k in rows],
                       f"Mean image per class and channel ({size} px, grey scale 0-255)", path)


def _plot_mean_difference(mean_imgs: dict[str, np.ndarray], base: str, path: Path) -> Path:
    rows = [k for k in mean_imgs if k != base]
    diffs = np.stack([mean_imgs[k] - mean_imgs[base] for k in rows])
    lim = float(np.abs(diffs).max()) or 1.0
    return _plot_tiles(diffs, [f"{k} - {base}" for k in rows],
                       f"Where classes differ: mean image minus the {base} mean", path,
                       cmap="coolwarm", vmin=-lim, vmax=lim,
                       colorbar="intensity difference (0-255 units)")


def _plot_separability(rows: list[dict], path: Path) -> Path:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    stats = list(STATISTICS)
    fig, axes = plt.subplots(1, max(len(targets), 1), squeeze=False,
                             figsize=(3.6 * max(len(targets), 1), 2.4), dpi=DPI)
    for ax, target in zip(axes[0], targets, strict=False):
        m = np.full((len(stats), len(CHANNELS)), np.nan)
        for r in rows:
            if r["target"] == target:
                m[stats.index(r["statistic"]), CHANNELS.index(r["channel"])] = r["auroc"]
        ax.imshow(m, cmap="coolwarm", vmin=0, vmax=1)
        for i in range(len(stats)):
            for j in range(len(CHANNELS)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(CHANNELS)), CHANNELS, fontsize=7, rotation=45)
        ax.set_yticks(range(len(stats)), [s.replace("_", " ") for s in stats], fontsize=7)
        ax.set_title(f"{target}: AUROC (0.5 = no signal)", fontsize=9)
    return _save(fig, path)


def _plot_samples(images: np.ndarray, ids: list[str], title: str, path: Path) -> Path:
    return _plot_tiles(images.astype(np.float64), ids, title, path)


def _report_md(a: Analysis, sample_files: dict[str, str], names: list[str]) -> str:
    s = a.summary
    parts = ["all", "train", "validation"]
    groups = list(dict.fromkeys(r["group"] for r in a.balance))
    cell = {(r["part"], r["group"]): f"{r['count']} ({100 * r['share']:.1f} %)"
            for r in a.balance}
    n_part = {r["part"]: r["erasers"] for r in a.balance}
    balance_rows = [{"group": g, **{p: cell[(p, g)] for p in parts}} for g in groups]
    stats_all = [r for r in a.channel_stats if r["class"] == "all"]
    by_class = [{"channel": ch, **{r["class"]: f"{r['mean']:.1f} ± {r['std']:.1f}"
                                   for r in a.channel_stats
                                   if r["channel"] == ch and r["class"] != "all"}}
                for ch in CHANNELS]
    best_sep = []
    for target in dict.fromkeys(r["target"] for r in a.separability):
        rows = sorted((r for r in a.separability if r["target"] == target),
                      key=lambda r: -r["separation"])
        best_sep += rows[:3]
    lines = [
        "# Data analysis",
        "",
        f"Source: `{s['source']}`; labels: {', '.join(f'`{f}`' for f in s['label_files'])} "
        f"({s['label_kind']}). {s['erasers']} erasers of {s['image_size']}x{s['image_size']} px, "
        f"channels {', '.join(CHANNELS)}; analysed at {s['analysis_size']} px.",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in a.findings],
        "",
        "## Class balance",
        "",
        f"Split: {s['split']['k']} stratified folds (seed {s['split']['seed']}), fold 0 held "
        f"out for validation, as `run_study.py` does by default (hash {s['split']['hash']}).",
        "",
        markdown_table(balance_rows, ["group", *parts],
                       ["group", *[f"{p} (n={n_part[p]})" for p in parts]]),
        "",
        "![class balance](class_balance.png)",
        "",
        "## Channel statistics",
        "",
        "Pixel intensities in 0-255 units over the whole crop, all erasers:",
        "",
        markdown_table(stats_all, ["channel", "mean", "std", "min", "max"]),
        "",
        "Mean ± std per class:",
        "",
        markdown_table(by_class, ["channel", *[c for c in names
                                               if any(c in r for r in by_class)]]),
        "",
        "Full table (mean, std, min, max per class and channel): `channel_stats.csv`.",
        "",
        "![intensity histograms](histograms.png)",
        "",
        "## What separates the classes",
        "",
        "AUROC of a simple per-eraser statistic, one channel at a time (0.5 = no signal, "
        "1 or 0 = perfect). Statistics: "
        + "; ".join(f"`{k}`: {v}" for k, v in STATISTICS.items()) + ". Best three per target:",
        "",
        markdown_table(best_sep, ["target", "channel", "statistic", "auroc", "direction"]),
        "",
        "![separability](separability.png)",
        "",
        "Full table: `separability.csv`.",
        "",
        "## Mean images",
        "",
        "![mean images](mean_images.png)",
        "",
    ]
    if "mean_difference.png" in a.files:
        lines += ["![mean difference](mean_difference.png)", ""]
    lines += ["## Samples", ""]
    for c, name in sample_files.items():
        lines += [f"### {c} ({CLASS_NAMES.get(c, c)})", "", f"![samples {c}]({name})", ""]
    return "\n".join(lines)
