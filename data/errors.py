"""User-facing data problems: every issue found in one pass, reported together."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

MAX_PER_KIND = 5  # enough examples to act on; the rest are counted, not listed


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data.

    ``where`` names the file, archive member or CSV row; ``message`` says what is wrong and
    what to do about it. ``kind`` groups identical problems so a thousand broken files make a
    short report.
    """

    level: str  # "error" (data unusable) or "warning" (usable, but the user should know)
    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def error(kind: str, where: str, message: str) -> Problem:
    return Problem("error", kind, where, message)


def warning(kind: str, where: str, message: str) -> Problem:
    return Problem("warning", kind, where, message)


def format_problems(problems: list[Problem], max_per_kind: int = MAX_PER_KIND) -> str:
    """Errors first, then warnings; at most ``max_per_kind`` lines per kind."""
    if not problems:
        return ""
    lines: list[str] = []
    for level in ("error", "warning"):
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        for p in problems:
            if p.level == level:
                by_kind[p.kind].append(p)
        for group in by_kind.values():
            for p in group[:max_per_kind]:
                lines.append(f"{level.upper()}: {p}")
            if len(group) > max_per_kind:
                more = len(group) - max_per_kind
                lines.append(f"{level.upper()}: ... and {more} more like this")
    return "\n".join(lines)


class DataError(Exception):
    """The data cannot be used as given. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [error("data", "data", problems)]
        self.problems = problems
        super().__init__(format_problems(problems))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]
