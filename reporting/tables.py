"""Tables and output folders shared by every report: CSV and markdown tables, and a staged
output folder whose files appear together or not at all."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from model.fileio import atomic_write


@contextlib.contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """A temporary folder next to ``out`` whose files move into ``out`` only on success.

    Nothing half-written ever appears in ``out``: if the body raises, the staging folder is
    removed and ``out`` keeps what it had. Files already in ``out`` that the run does not
    produce are left alone.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None
              ) -> Path:
    """Write dict rows as CSV through a temporary file and a rename (never half-written)."""
    path = Path(path)
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> str:
    """GitHub markdown table; floats with 3 decimals (1 from 10 up)."""
    if not rows:
        return "_(none)_"
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)

    def fmt(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if v != v else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


_LATEX_SPECIAL = str.maketrans({"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                                "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"})


def latex_escape(text: object) -> str:
    """``text`` safe in LaTeX (its ten special characters written out)."""
    return str(text).translate(_LATEX_SPECIAL)


def latex_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A ``booktabs`` tabular of dict rows (numbers right-aligned, 3 decimals like
    :func:`markdown_table`), ready to ``\\input`` into a paper; without rows, the header
    alone (a LaTeX comment when there are no columns either)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    if not columns:
        return "% (an empty table)\n"

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if v != v else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v).translate(_LATEX_SPECIAL)

    numeric = [all(isinstance(r.get(c), int | float | np.number) for r in rows) and rows
               for c in columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(str(c).translate(_LATEX_SPECIAL) for c in columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(cell(r.get(c, "")) for c in columns) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)
