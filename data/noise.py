"""Suspected label errors by confident learning, from out-of-fold probabilities.

The labels of a MILAN delivery come from an automated system and are noisy (mostly defective
erasers labelled good). Given each eraser's predicted probabilities from a model that did
*not* train on it (k-fold cross-validation, done by ``label_issues.py``), cleanlab's
confident learning estimates the joint distribution of given and true labels and flags the
erasers whose given label is most likely wrong (``cleanlab.filter.find_label_issues``), ranked
by label quality (``cleanlab.rank.get_label_quality_scores``: the predicted probability of the
given label, low = suspicious).

The classes are the four ``X_Y`` codes (the multi-class CSV), or good/defect when only the
binary CSV exists. The model's probabilities are one-vs-all marginals
(``print, physical, no_defect, defect``); :func:`joint_probs` turns them into the class
distribution exactly for every head (see there).

Also here: reading and writing the label-issue CSV, the cleaned label CSV, and precision and
recall against the synthetic data's ``truth/clean_labels.csv``. Pure numpy + cleanlab: this
module trains nothing.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.labels import MULTICLASS
from data.sources import strip_extension
from model.channels import CLASS_CODES
from model.fileio import atomic_write

log = logging.getLogger(__name__)

BINARY_CLASSES = ("0", "1")
ISSUE_COLUMNS = ("rank", "id", "given_label", "suggested_label", "confidence", "quality")
CLEAN_ACTIONS = ("relabel", "drop")


NEAR_CHANCE_AUROC = 0.6  # out-of-fold AUROC below this: the model cannot see that kind
KIND_COLUMNS = {"print": 0, "physical": 1, "defect": 3}  # in the model's probabilities


class NoiseError(ValueError):
    """Bad input for the ranking or an unreadable CSV (message is user-facing)."""


def near_chance_kinds(targets: np.ndarray, probs: np.ndarray, label_kind: str = MULTICLASS,
                      below: float = NEAR_CHANCE_AUROC) -> dict[str, float]:
    """The defect kinds the out-of-fold model tells apart no better than about chance, with
    their AUROC: its flags for those kinds would be its own mistakes, not label errors. With
    binary labels only ``defect`` is judged; a kind with one class only is not judged."""
    from sklearn.metrics import roc_auc_score

    t = np.asarray(targets).astype(int)
    truth = {"defect": t.max(axis=1)}
    if label_kind == MULTICLASS:
        truth |= {"print": t[:, 0], "physical": t[:, 1]}
    out = {}
    for kind, y in truth.items():
        if 0 < y.sum() < len(y):
            auroc = float(roc_auc_score(y, np.asarray(probs)[:, KIND_COLUMNS[kind]]))
            if not auroc >= below:
                out[kind] = auroc
    return out


def joint_probs(probs: np.ndarray, label_kind: str = MULTICLASS) -> np.ndarray:
    """Class probabilities from the model's ``(N, 4)`` one-vs-all probabilities.

    Columns of ``probs``: print, physical, no_defect, defect (``model.PROB_NAMES``). For the
    multi-class ``X_Y`` classes, ``p11 = print + physical - defect`` recovers the joint exactly
    for every head: the multiclass softmax (``print = p10 + p11`` ...), the multilabel head
    (independent sigmoids: ``pp + pf - (1 - (1-pp)(1-pf)) = pp*pf``) and the binary head
    (all three equal: ``p11 = p``, a two-class model). Returns ``(N, 4)`` in
    :data:`~model.channels.CLASS_CODES` order, or ``(N, 2)`` (good, defect) for binary labels.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 4:
        raise NoiseError(f"expected (N, 4) probabilities (print, physical, no_defect, defect), "
                         f"got shape {p.shape}")
    if label_kind != MULTICLASS:
        out = np.stack([p[:, 2], p[:, 3]], axis=1)
    else:
        p11 = np.clip(p[:, 0] + p[:, 1] - p[:, 3], 0.0, None)
        out = np.stack([p[:, 2], np.clip(p[:, 1] - p11, 0.0, None),
                        np.clip(p[:, 0] - p11, 0.0, None), p11], axis=1)
    out = np.clip(out, 1e-12, None)  # cleanlab needs strictly positive rows summing to 1
    return out / out.sum(axis=1, keepdims=True)


def class_names(label_kind: str) -> tuple[str, ...]:
    return CLASS_CODES if label_kind == MULTICLASS else BINARY_CLASSES


def given_classes(targets: np.ndarray, label_kind: str = MULTICLASS) -> np.ndarray:
    """Index of each eraser's given class in :func:`class_names` order."""
    t = np.asarray(targets).astype(int)
    if label_kind != MULTICLASS:
        return t.max(axis=1)
    return 2 * t[:, 0] + t[:, 1]  # X_Y -> 0_0, 0_1, 1_0, 1_1


@dataclass
class LabelIssues:
    """Every eraser's label quality, and which ones confident learning flags.

    ``order`` lists the flagged rows, most suspicious first; ``quality`` is the predicted
    probability of the given label (cleanlab's self-confidence score), ``suggested`` the most
    probable class and ``confidence`` its probability.
    """

    ids: list[str]
    label_kind: str
    given: np.ndarray  # class index per eraser
    suggested: np.ndarray
    confidence: np.ndarray
    quality: np.ndarray
    flagged: np.ndarray  # bool per eraser
    order: np.ndarray  # flagged rows, ranked

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.label_kind)

    @property
    def flagged_ids(self) -> list[str]:
        return [self.ids[i] for i in self.order]

    def rows(self) -> list[dict]:
        """The flagged erasers as CSV rows (:data:`ISSUE_COLUMNS`), most suspicious first."""
        names = self.classes
        return [{"rank": r + 1, "id": self.ids[i], "given_label": names[self.given[i]],
                 "suggested_label": names[self.suggested[i]],
                 "confidence": round(float(self.confidence[i]), 4),
                 "quality": round(float(self.quality[i]), 4)}
                for r, i in enumerate(self.order)]


def find_issues(ids: Sequence[str], targets: np.ndarray, probs: np.ndarray, *,
                label_kind: str = MULTICLASS, filter_by: str = "prune_by_noise_rate",
                max_flagged: int | None = None, missed_only: bool = False,
                blind: Iterable[str] = ()) -> LabelIssues:
    """Rank suspected mislabels from out-of-fold ``probs`` (``(N, 4)``, model order).

    ``filter_by`` is cleanlab's filter (``prune_by_noise_rate``, ``prune_by_class``, ``both``,
    ``confident_learning``, ``predicted_neq_given``...); ``max_flagged`` keeps only the most
    suspicious ones; ``missed_only`` keeps only erasers labelled good whose suggestion is a
    defect (the annotator's usual mistake). ``blind``: defect kinds (``print``,
    ``physical``, ``defect``; :func:`near_chance_kinds`) the model cannot see: no eraser is
    flagged for a change of such a kind. The probabilities must be out-of-fold: in-sample
    ones have memorised the noise and flag almost nothing.
    """
    # Here, not at the top: cleanlab takes seconds to import, and run_study.py --flagged and
    # the commands that only read or write flag lists need none of it.
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    ids = list(ids)
    if len(ids) != len(targets) or len(ids) != len(probs):
        raise NoiseError(f"{len(ids)} ids, {len(targets)} targets and {len(probs)} probability "
                         "rows must be as many")
    if not np.isfinite(np.asarray(probs, dtype=float)).all():
        raise NoiseError("the probabilities hold NaN or infinite values")
    pred = joint_probs(probs, label_kind)
    given = given_classes(targets, label_kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = np.asarray(find_label_issues(given, pred, filter_by=filter_by), dtype=bool)
        quality = get_label_quality_scores(given, pred, method="self_confidence")
    for w in caught:  # e.g. a class too rare to estimate its noise rate: worth a log line
        log.info("cleanlab: %s", w.message)
    suggested = pred.argmax(axis=1)
    if missed_only:  # class 0 is good (0_0, or "0" with binary labels)
        mask &= (given == 0) & (suggested != 0)
    blind = set(blind)
    if "defect" in blind:  # cannot tell defective from good: every flag is a guess
        mask[:] = False
    elif label_kind == MULTICLASS:  # X_Y -> the X bit (print) and the Y bit (physical)
        for kind, bit in (("print", 2), ("physical", 1)):
            if kind in blind:
                mask &= (given & bit) == (suggested & bit)
    flagged_rows = np.flatnonzero(mask)
    order = flagged_rows[np.argsort(quality[flagged_rows], kind="stable")]
    if max_flagged is not None:
        order = order[:max_flagged]
        mask = np.zeros_like(mask)
        mask[order] = True
    return LabelIssues(ids=ids, label_kind=label_kind, given=given, suggested=suggested,
                       confidence=pred[np.arange(len(ids)), suggested], quality=quality,
                       flagged=mask, order=order)


# ---------------------------------------------------------------------------------------------
# CSV files


def _atomic_rows(path: Path, header: Sequence[str] | None, rows: Iterable[Sequence]) -> Path:
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def write_issues(path: str | Path, issues: LabelIssues) -> Path:
    """``label_issues.csv``: one row per flagged eraser, most suspicious first (atomic)."""
    rows = issues.rows()
    return _atomic_rows(Path(path), ISSUE_COLUMNS,
                        ([r[c] for c in ISSUE_COLUMNS] for r in rows))


def read_flagged(path: str | Path) -> list[str]:
    """The ids of a ``label_issues.csv`` (or any CSV whose first column, or ``id`` column,
    lists eraser ids; a header is optional; with a ``flagged`` column, as in
    ``label_quality.csv``, only the rows flagged 1). Raises :class:`NoiseError`."""
    path = Path(path)
    if not path.is_file():
        raise NoiseError(f"{path} does not exist. Make it with `python label_issues.py "
                         "DATA --study NAME` (it writes label_issues.csv).")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise NoiseError(f"{path} could not be read as CSV ({exc}).") from None
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    col = header.index("id") if "id" in header else 0
    if "id" in header or (header and header[0] in ("rank", "sample", "eraser")):
        rows = rows[1:]
    if "flagged" in header:  # label_quality.csv lists every eraser: keep the flagged ones
        flag = header.index("flagged")
        rows = [r for r in rows if len(r) > flag and r[flag].strip().lower() in ("1", "true")]
    ids = [strip_extension(r[col].strip()) for r in rows if len(r) > col and r[col].strip()]
    return list(dict.fromkeys(ids))


def flagged_hash(ids: Iterable[str]) -> str | None:
    """Order-free fingerprint of a flagged-id list (None for no list): binds it to a study."""
    ids = sorted(set(ids))
    if not ids:
        return None
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def cleaned_rows(issues: LabelIssues, action: str = "relabel") -> list[tuple[str, str]]:
    """``(id, label)`` for every eraser after cleaning: flagged ones get the suggested label
    (``relabel``) or are left out (``drop``)."""
    if action not in CLEAN_ACTIONS:
        raise NoiseError(f"unknown cleaning action {action!r}; use one of {CLEAN_ACTIONS}")
    names = issues.classes
    out = []
    for i, k in enumerate(issues.ids):
        if issues.flagged[i]:
            if action == "drop":
                continue
            out.append((k, names[issues.suggested[i]]))
        else:
            out.append((k, names[issues.given[i]]))
    return out


def write_cleaned(path: str | Path, issues: LabelIssues, action: str = "relabel",
                  header: Sequence[str] | None = None) -> Path:
    """A cleaned copy of the labels in the delivered format, written atomically.

    Multi-class labels give ``ID,X_Y`` rows, binary-only ones ``ID,0|1``; ``header`` defaults
    to ``ID,label`` (pass the original CSV's header to keep its names).
    """
    return _atomic_rows(Path(path), header or ("ID", "label"), cleaned_rows(issues, action))


def read_truth(path: str | Path) -> dict[str, bool]:
    """``flipped`` per id from a synthetic set's ``truth/clean_labels.csv``."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            return {r["ID"]: r["flipped"].strip() == "1" for r in csv.DictReader(f)}
    except (OSError, KeyError) as exc:
        raise NoiseError(f"{path} is not a synthetic truth file with ID and flipped columns "
                         f"({exc}).") from None


def precision_recall(flagged: Iterable[str], truly_wrong: Iterable[str]) -> dict[str, float]:
    """Precision and recall of ``flagged`` ids against the truly mislabelled ids."""
    flagged, wrong = set(flagged), set(truly_wrong)
    hit = len(flagged & wrong)
    return {"flagged": len(flagged), "mislabelled": len(wrong), "found": hit,
            "precision": hit / len(flagged) if flagged else float("nan"),
            "recall": hit / len(wrong) if wrong else float("nan")}
