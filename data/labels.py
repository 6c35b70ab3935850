"""Label CSVs as delivered: binary (``ID,0|1``) and multi-class (``ID,X_Y``).

Header names are free and the header row is optional; ids may carry a file extension. When
both files are present the multi-class one gives the targets (print X, physical Y) and the
binary one is cross-checked against ``X or Y``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from data.errors import DataError, Problem, error, warning
from data.sources import strip_extension

BINARY = "binary"
MULTICLASS = "multiclass"
_MULTI_RE = re.compile(r"^([01])_([01])$")
_BINARY_RE = re.compile(r"^([01])(?:\.0*)?$")  # 0/1, or 0.0/1.0 as pandas writes floats
MAX_LISTED = 5


def parse_label(text: str) -> tuple[str, tuple[int, int] | int] | None:
    """``"1"`` (or ``"1.0"``) -> (binary, 1); ``"1_0"`` -> (multiclass, (1, 0)); anything
    else -> None."""
    text = text.strip().strip('"').strip()
    b = _BINARY_RE.match(text)
    if b:
        return BINARY, int(b.group(1))
    m = _MULTI_RE.match(text)
    if m:
        return MULTICLASS, (int(m.group(1)), int(m.group(2)))
    return None


@dataclass(frozen=True)
class LabelFile:
    """One parsed CSV: ``labels`` maps id -> 0/1 (binary) or (X, Y) (multi-class)."""

    path: Path
    kind: str
    labels: dict[str, int | tuple[int, int]]
    header: tuple[str, ...] | None


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample.strip() else "excel"
    except csv.Error:
        dialect = "excel"
    reader = csv.reader(text.splitlines(), dialect)
    try:
        return [row for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:  # e.g. a field over csv's limit of 131072 characters
        raise LabelFileError(f"row {reader.line_num} cannot be read as CSV ({exc})") from None


class LabelFileError(ValueError):
    """A CSV that the csv module cannot read at all (the message names the row)."""


def read_label_csv(path: str | Path, *, explicit: bool = True) -> tuple[LabelFile | None,
                                                                         list[Problem]]:
    """Parse one label CSV, collecting every problem (row numbers are 1-based file lines).

    ``explicit`` is False for CSVs found by looking around the data folder: those that are
    clearly not label files are skipped with a warning instead of failing the run.
    """
    path = Path(path)
    if not path.is_file():
        return None, [error("missing-labels", str(path), "does not exist. Pass the label CSV "
                            "with --labels, or put it next to the images.")]
    try:
        rows = _rows(path)
    except OSError as exc:
        return None, [error("unreadable-labels", str(path), f"could not be read ({exc}).")]
    except LabelFileError as exc:
        # Not skipped when found next to the images: it may well be the label file, damaged.
        return None, [error("bad-labels", str(path), f"{exc}: label files hold short rows of "
                            "an id and a label. Fix that row, or move the file away if it is "
                            "not a label file.")]
    if not rows:
        return None, [error("empty-labels", str(path), "is empty. It should hold one row per "
                            "eraser: the id, then 0/1 (binary) or X_Y (multi-class).")]

    header = None
    first = rows[0]
    if len(first) < 2 or parse_label(first[1]) is None:
        header, rows = tuple(c.strip() for c in first), rows[1:]
        offset = 2
    else:
        offset = 1
    if not rows:
        return None, [error("empty-labels", str(path), "has a header but no data rows.")]

    parsed = [parse_label(r[1]) if len(r) >= 2 else None for r in rows]
    n_binary = sum(1 for p in parsed if p and p[0] == BINARY)
    n_multi = sum(1 for p in parsed if p and p[0] == MULTICLASS)
    if n_binary == 0 and n_multi == 0:
        msg = ("is not a label file: its second column holds neither 0/1 nor X_Y labels "
               f"(first row: {','.join(rows[0])!r}).")
        if explicit:
            return None, [error("bad-labels", str(path), msg)]
        return None, [warning("not-labels", str(path), msg + " Skipped.")]
    kind = MULTICLASS if n_multi >= n_binary else BINARY
    expected = "X_Y (e.g. 1_0)" if kind == MULTICLASS else "0 or 1"

    problems: list[Problem] = []
    labels: dict[str, int | tuple[int, int]] = {}
    for i, (row, p) in enumerate(zip(rows, parsed, strict=True)):
        where = f"{path} row {i + offset}"
        if len(row) < 2:
            problems.append(error("bad-label", where, f"has {len(row)} column(s); expected "
                                  "id,label."))
            continue
        eraser_id = strip_extension(row[0])
        if not eraser_id:
            problems.append(error("bad-label", where, "has an empty id."))
            continue
        if p is None or p[0] != kind:
            problems.append(error(
                "bad-label", where, f"label {row[1].strip()!r} for {eraser_id} is not {expected} "
                f"like the rest of this {kind} file. Fix or remove the row."))
            continue
        if eraser_id in labels:
            if labels[eraser_id] != p[1]:
                problems.append(error(
                    "conflicting-duplicate", where, f"id {eraser_id} appears again with a "
                    f"different label ({_fmt(labels[eraser_id])} vs {_fmt(p[1])}). Keep one row."))
            else:
                problems.append(warning("duplicate", where, f"id {eraser_id} is listed twice "
                                        "with the same label; the repeat is ignored."))
            continue
        labels[eraser_id] = p[1]
    return LabelFile(path, kind, labels, header), problems


def _fmt(label: int | tuple[int, int]) -> str:
    return f"{label[0]}_{label[1]}" if isinstance(label, tuple) else str(label)


@dataclass(frozen=True)
class LabelSet:
    """Targets per eraser id as (print X, physical Y).

    With only a binary CSV the split into print and physical is unknown; ``kind`` is then
    ``binary`` and both columns hold the defect flag (only the binary head can train on it).
    """

    targets: dict[str, tuple[int, int]]
    kind: str
    files: tuple[LabelFile, ...]

    def describe(self) -> str:
        return ", ".join(f"{f.path} ({f.kind})" for f in self.files)


def find_label_csvs(folder: Path) -> list[Path]:
    """CSV files directly in ``folder`` (sub-folders such as ``truth/`` are not searched)."""
    return sorted(p for p in folder.glob("*") if p.suffix.lower() == ".csv" and p.is_file())


def load_labels(paths: list[str | Path], *, explicit: bool = True) -> tuple[LabelSet,
                                                                            list[Problem]]:
    """Read and reconcile up to one binary and one multi-class CSV.

    Raises :class:`DataError` only when no usable labels remain; other problems are returned
    so the caller can report them with the image problems, in one pass.
    """
    problems: list[Problem] = []
    files: list[LabelFile] = []
    for p in paths:
        lf, probs = read_label_csv(p, explicit=explicit)
        problems += probs
        if lf is not None:
            files.append(lf)
    by_kind: dict[str, list[LabelFile]] = {BINARY: [], MULTICLASS: []}
    for lf in files:
        by_kind[lf.kind].append(lf)
    for kind, group in by_kind.items():
        if len(group) > 1:
            names = ", ".join(str(lf.path) for lf in group)
            problems.append(error("ambiguous-labels", names, f"are all {kind} label files; "
                                  "pass the one to use with --labels."))
    if any(p.level == "error" and p.kind == "ambiguous-labels" for p in problems):
        raise DataError(problems)
    if not files:
        if not any(p.level == "error" for p in problems):
            if paths:  # CSVs were found, none of them a label file (said in the warnings)
                problems.append(error(
                    "no-labels", ", ".join(map(str, paths)),
                    f"{'is not a label file' if len(paths) == 1 else 'are not label files'} "
                    "(see above) and no other CSV holds the labels. Pass --labels with the "
                    "binary and/or multi-class CSV."))
            else:
                problems.append(error("no-labels", "labels", "no label CSV found. Pass "
                                      "--labels with the binary and/or multi-class CSV."))
        raise DataError(problems)

    multi = by_kind[MULTICLASS][0] if by_kind[MULTICLASS] else None
    binary = by_kind[BINARY][0] if by_kind[BINARY] else None
    if multi is not None:
        targets = {k: v for k, v in multi.labels.items()}
        if binary is not None:
            problems += _cross_check(multi, binary)
        return LabelSet(targets, MULTICLASS, tuple(files)), problems
    assert binary is not None
    targets = {k: (int(v), int(v)) for k, v in binary.labels.items()}
    problems.append(warning(
        "binary-only", str(binary.path), "only binary labels: print and physical defects cannot "
        "be told apart, so only the binary head can be trained. Add the multi-class X_Y CSV "
        "for the graded per-class scores."))
    return LabelSet(targets, BINARY, tuple(files)), problems


def _cross_check(multi: LabelFile, binary: LabelFile) -> list[Problem]:
    disagree = [k for k, (x, y) in multi.labels.items()
                if k in binary.labels and binary.labels[k] != int(x or y)]
    only_multi = sorted(set(multi.labels) - set(binary.labels))
    only_binary = sorted(set(binary.labels) - set(multi.labels))
    problems = []
    if disagree:
        shown = ", ".join(f"{k} ({_fmt(multi.labels[k])} vs {binary.labels[k]})"
                          for k in sorted(disagree)[:MAX_LISTED])
        problems.append(warning(
            "labels-disagree", f"{binary.path} vs {multi.path}",
            f"{len(disagree)} eraser(s) disagree on defect = X or Y: {shown}"
            f"{' ...' if len(disagree) > MAX_LISTED else ''}. The multi-class labels are used."))
    for ids, name in ((only_multi, binary.path), (only_binary, multi.path)):
        if ids:
            problems.append(warning(
                "labels-missing-id", str(name), f"lacks {len(ids)} id(s) the other CSV has: "
                f"{', '.join(ids[:MAX_LISTED])}{' ...' if len(ids) > MAX_LISTED else ''}."))
    return problems
