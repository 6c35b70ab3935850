"""Checks every command runs on its flags before any work starts (one implementation for all).

A numeric flag out of range, an output place that cannot be written, or an earlier result
that would be replaced without ``--force`` is said in one sentence naming the flag or file,
before anything is loaded, trained or written. Each check returns the message (``None`` when
all is well); the command passes it to :func:`cli.common.fail`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_PORT = 65535


@dataclass(frozen=True)
class Range:
    """The values a numeric flag accepts: ``low <= v <= high`` (``open``: strictly)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if not isinstance(value, int) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None
                    and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        def num(v: float) -> str:
            return f"{v:g}" if not self.integer else str(int(v))

        if self.low is not None and self.high is None:
            return f"{'above' if self.low_open else 'at least'} {num(self.low)}"
        if self.high is not None and self.low is None:
            return f"{'below' if self.high_open else 'at most'} {num(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{num(self.low)}, {num(self.high)}{right}"


def at_least(low: int) -> Range:
    return Range(low=low, integer=True)


def int_between(low: int, high: int) -> Range:
    return Range(low=low, high=high, integer=True)


POSITIVE = Range(low=0.0, low_open=True)
NON_NEGATIVE_INT = at_least(0)
RECALL = Range(low=0.0, high=1.0, low_open=True)  # a recall in (0, 1]
VAL_FRACTION = Range(low=0.0, high=0.5, low_open=True)  # at least 2 folds
TEST_FRACTION = Range(low=0.0, high=0.5, high_open=True)  # data.split refuses 0.5 and more
PORT = int_between(0, MAX_PORT)  # 0: any free port
SEED = int_between(0, 2**32 - 1)  # numpy's seeds
INPUT_SIZE = int_between(8, 1024)  # two pooling steps down to 2x2 at least; 1024: 3x 310 px
EPOCHS = int_between(1, 10_000)

Rule = tuple[str, "float | Sequence[float] | None", Range]


def bad_number(rules: Iterable[Rule]) -> str | None:
    """The first ``(flag, value, range)`` whose value (or any of its values, for ``nargs``)
    lies outside its range, as a message; ``None`` when all fit. ``None`` values (flag not
    given) are skipped."""
    for flag, value, allowed in rules:
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if not allowed.contains(v):
                shown = v if isinstance(v, int) else f"{v:g}"
                return f"{flag} must be {allowed.describe()}, not {shown}."
    return None


def pool_size(value: str) -> int | None:
    """A ``K|off`` flag (``export_best.py --ensemble``): ``off`` is 0, a whole number >= 0
    is itself, anything else None (the caller says what is wrong)."""
    if value.strip().lower() == "off":
        return 0
    try:
        pool = int(value)
    except ValueError:
        return None
    return pool if pool >= 0 else None


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def folder_problem(path: str | os.PathLike, flag: str) -> str | None:
    """Why ``path`` cannot be (made into) a folder this process writes into, or ``None``.
    Nothing is created: the nearest existing folder above it must be writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{flag} {path} is a file, not a folder; give a folder (or remove the file)."
    anchor = _existing_ancestor(path)
    if not anchor.is_dir():
        return (f"{flag} {path} cannot be created: {anchor} is a file, not a folder; give "
                "another path.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        return (f"{flag} {path} is not writable ({anchor} is read-only for this user); give "
                "a folder you can write to.")
    return None


def file_problem(path: str | os.PathLike, flag: str, *, force: bool = False) -> str | None:
    """Why the file ``path`` cannot be written (a folder, under a file, read-only), or would
    replace an earlier one without ``force``; ``None`` when it can be written."""
    path = Path(path)
    if path.is_dir():
        return f"{flag} {path} is a folder; give a file name (e.g. {path / 'predictions.csv'})."
    if path.exists() and not force:
        return (f"{flag} {path} already exists; pass --force to replace it, or choose another "
                f"{flag}.")
    return folder_problem(path.parent, flag)


def existing_outputs(paths: Iterable[str | os.PathLike], flag: str) -> str | None:
    """A message naming the earlier results among ``paths`` that a run would replace (for
    commands that refuse without ``--force``), or ``None`` when there are none."""
    found = [str(p) for p in paths if Path(p).exists()]
    if not found:
        return None
    return (f"{flag}: {', '.join(found)} already exist{'s' if len(found) == 1 else ''} from an "
            f"earlier run; pass --force to replace {'it' if len(found) == 1 else 'them'}, or "
            f"choose another {flag}.")


def file_name_problem(name: str, flag: str) -> str | None:
    """A file stem given on the command line (``--name``, ``--group``): one plain name, no
    folders, no leading dot or dash, at most 64 characters."""
    if (not name or len(name) > 64 or name != Path(name).name or name.startswith((".", "-"))
            or any(not (c.isalnum() or c in "_-.") for c in name)):
        return (f"{flag} {name!r} is not a plain file name: use letters, digits, '_', '-' and "
                "'.' (not first), at most 64 characters, no folders.")
    return None


MAX_STUDY_NAME = 128


def study_name_problem(name: str | None, flag: str = "--study") -> str | None:
    """A study name given on the command line: not empty, no surrounding blanks, no control
    characters or slashes (it names report folders), at most 128 characters. ``None``: the
    flag was not given (the command chooses the name)."""
    if name is None:
        return None
    if not name.strip():
        return (f"{flag} {name!r} is empty; give the study a name (letters, digits, '_', '-', "
                "'.'), or leave the flag out for the data folder's name.")
    if (name != name.strip() or len(name) > MAX_STUDY_NAME or any(c in name for c in "/\\")
            or any(not c.isprintable() for c in name)):
        return (f"{flag} {name!r} is not a usable study name: no leading or trailing blanks, "
                f"slashes or control characters, at most {MAX_STUDY_NAME} characters.")
    return None


def names_problem(names: Sequence[str] | None, known: Sequence[str], flag: str, *,
                  alone: str | None = None) -> str | None:
    """Every name one of ``known`` (or the word ``alone``, which must then stand alone)."""
    unknown = [n for n in names or [] if n not in (*known, *([alone] if alone else []))]
    if unknown:
        return (f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}"
                + (f", or {alone}." if alone else "."))
    if alone and names and alone in names and len(names) > 1:
        return f"{flag}: '{alone}' stands alone; give it without other names."
    return None
