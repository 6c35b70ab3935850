"""Load a MILAN delivery into one validated, labelled, cached set of erasers."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.cache import ImageStore, Progress, build_store, default_cache_dir
from data.errors import DataError, Problem, error, warning
from data.labels import MULTICLASS, LabelSet, find_label_csvs, load_labels
from data.sources import discover
from model.channels import CHANNELS, CLASS_CODES, NATIVE_SIZE

log = logging.getLogger(__name__)

USE_DEFAULT_CACHE = "default"


def class_codes(targets: np.ndarray) -> list[str]:
    """``X_Y`` class of each ``(print, physical)`` target row."""
    return [f"{x}_{y}" for x, y in targets]


@dataclass
class EraserSet:
    """Erasers that passed validation, in id order, with their targets.

    ``targets`` is ``(N, 2)`` uint8 with columns (print X, physical Y), or None for unlabelled
    data (prediction). Pixels are fetched per input size with :meth:`images`.
    """

    ids: list[str]
    targets: np.ndarray | None
    label_kind: str | None
    source: str
    label_files: list[str]
    store: ImageStore = field(repr=False)
    problems: list[Problem] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_size(self) -> int:
        return self.store.size

    @property
    def defect(self) -> np.ndarray:
        return self.targets.max(axis=1)

    @property
    def codes(self) -> list[str]:
        """``X_Y`` class per eraser (the stratification key)."""
        return class_codes(self.targets)

    def images(self, size: int | None = None, ids: list[str] | None = None) -> np.ndarray:
        """``(n, 6, S, S)`` uint8 in memory: all erasers, or those in ``ids``."""
        rows = self.store.rows(self.ids if ids is None else ids)
        return self.store.at_size(size or self.image_size, rows)

    def targets_of(self, ids: list[str]) -> np.ndarray:
        """``(n, 2)`` [print, physical] targets of ``ids``, in that order (the store holds the
        erasers in this set's order)."""
        return self.targets[self.store.rows(ids)]

    @property
    def data_hash(self) -> str:
        """Changes when any pixel, id or label changes; guards a study against other data."""
        h = hashlib.sha256()
        digests = dict(zip(self.store.ids, self.store.digests, strict=True))
        for i, k in enumerate(self.ids):
            t = "" if self.targets is None else f"{self.targets[i, 0]}_{self.targets[i, 1]}"
            h.update(f"{k}\0{digests[k]}\0{t}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        """Counts and class balance as plain data (printed by ``check_data.py``, kept by
        studies)."""
        out: dict = {
            "erasers": len(self.ids), "image_size": self.image_size,
            "channels": list(CHANNELS), "source": self.source,
            "label_files": self.label_files, "label_kind": self.label_kind,
        }
        if self.targets is not None:
            n = len(self.ids)
            out["defect"] = int(self.defect.sum())
            out["print"] = int(self.targets[:, 0].sum())
            out["physical"] = int(self.targets[:, 1].sum())
            counts = Counter(self.codes)
            out["classes"] = {c: counts.get(c, 0) for c in CLASS_CODES}
            out["defect_rate"] = round(out["defect"] / n, 4) if n else 0.0
        return out


def format_summary(summary: dict) -> str:
    """Human-readable summary table."""
    lines = [
        f"source       {summary['source']}",
        f"labels       {', '.join(summary['label_files']) or 'none'}",
        f"erasers      {summary['erasers']}",
        f"image size   {summary['image_size']}x{summary['image_size']} px"
        + ("" if summary["image_size"] == NATIVE_SIZE
           else f" (delivered erasers are {NATIVE_SIZE}x{NATIVE_SIZE})"),
        f"channels     {', '.join(summary['channels'])}",
    ]
    if "defect" in summary:
        n = max(summary["erasers"], 1)

        def share(k: int) -> str:
            return f"{k:5d}  {100 * k / n:5.1f} %"

        lines += [
            f"defective    {share(summary['defect'])}",
            f"print  (X=1) {share(summary['print'])}",
            f"physical(Y=1){share(summary['physical'])}",
        ]
        if summary["label_kind"] == MULTICLASS:
            lines += [f"class {c}    {share(k)}" for c, k in summary["classes"].items()]
    return "\n".join(lines)


def _resolve_cache(cache_dir: Path | str | None) -> Path | None:
    if cache_dir == USE_DEFAULT_CACHE:
        return default_cache_dir()
    return None if cache_dir is None else Path(cache_dir)


def scan(path: str | Path, labels: list[str | Path] | None = None, *,
         require_labels: bool = True, cache_dir: Path | str | None = USE_DEFAULT_CACHE,
         workers: int | None = None,
         progress: Progress | None = None) -> tuple[EraserSet | None, list[Problem]]:
    """Validate everything in one pass; returns the set (None if unusable) and all problems."""
    path = Path(path)
    problems: list[Problem] = []
    source, notes = discover(path)
    problems += notes + source.problems

    label_set: LabelSet | None = None
    label_paths = [Path(p) for p in labels or []]
    explicit = bool(label_paths)
    if not explicit:
        label_paths = find_label_csvs(path if path.is_dir() else path.parent)
    if label_paths or require_labels:
        try:
            label_set, label_problems = load_labels(label_paths, explicit=explicit)
            problems += label_problems
        except DataError as exc:
            # Without a requirement for labels, finding no label file is fine (prediction).
            problems += [p for p in exc.problems
                         if require_labels or explicit or p.kind != "no-labels"]

    available = source.ids()
    if label_set is not None:
        have = set(available)
        for k in sorted(set(label_set.targets) - have):
            problems.append(error(
                "missing-image", f"{label_set.describe()} id {k}",
                f"is labelled but has no image in {source.location}. Add the image or remove "
                "the row."))
        unlabelled = sorted(have - set(label_set.targets))
        if unlabelled:
            problems.append(warning(
                "unlabelled", str(source.location), f"{len(unlabelled)} eraser(s) have no label "
                f"and are left out: {', '.join(unlabelled[:5])}"
                f"{' ...' if len(unlabelled) > 5 else ''}."))
        ids = sorted(have & set(label_set.targets))
    else:
        ids = available
    if not ids and not any(p.level == "error" for p in problems):
        problems.append(error("no-images", str(path), "holds no labelled erasers to use."))

    store, image_problems = build_store(source, ids, cache_dir=_resolve_cache(cache_dir),
                                        workers=workers, progress=progress) if ids else (None, [])
    problems += image_problems
    if store is None or any(p.level == "error" for p in problems):
        return None, problems

    targets = None
    if label_set is not None:
        targets = np.array([label_set.targets[k] for k in ids], dtype=np.uint8).reshape(-1, 2)
    eraser_set = EraserSet(
        ids=ids, targets=targets, label_kind=label_set.kind if label_set else None,
        source=source.describe(),
        label_files=[str(f.path) for f in label_set.files] if label_set else [],
        store=store, problems=problems)
    return eraser_set, problems


def load_data(path: str | Path, labels: list[str | Path] | None = None, *,
              require_labels: bool = True, cache_dir: Path | str | None = USE_DEFAULT_CACHE,
              workers: int | None = None, progress: Progress | None = None) -> EraserSet:
    """Load and validate a delivery; raises :class:`DataError` listing every problem found.

    ``path`` may be a folder of ``.npy`` (flat or in ``arrays/``), ``arrays.zip``, a folder of
    ``<ID>_<CH>.png`` (flat or in ``images/``), ``images.zip``, or a folder holding any of
    these plus the label CSVs (found automatically when ``labels`` is not given).
    """
    eraser_set, problems = scan(path, labels, require_labels=require_labels,
                                cache_dir=cache_dir, workers=workers, progress=progress)
    if eraser_set is None:
        raise DataError(problems)
    for p in problems:
        log.warning("%s", p)
    return eraser_set
