"""A fresh virtual environment holding only the named distributions (and what they require),
for tests that run an exported model the way a grader would: without this repository.

Installing torch again would copy gigabytes; the new environment links the installed files
of exactly those distributions instead (their RECORD), so an import of anything else fails
there as it would on a grader's machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need, themselves included (markers evaluated
    for this interpreter, extras followed)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(n) for n in names]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this machine does not have
        wanted = ["", *sorted(req.extras)]
        for spec in dist.requires or []:
            sub = Requirement(spec)
            applies = sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                                for e in wanted)
            if applies and canonicalize_name(sub.name) not in found:
                todo.append(sub)
        found[key] = dist
    return found


def _roots(dist: metadata.Distribution, site: Path) -> set[tuple[str, ...]]:
    """The top-level entries of ``dist`` under ``site``, one level deeper inside a namespace
    folder (no ``__init__.py``) that other distributions share."""
    out = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if not parts or parts[0] in ("..", "__pycache__"):
            continue
        top = site / parts[0]
        namespace = top.is_dir() and not (top / "__init__.py").exists() \
            and not parts[0].endswith((".dist-info", ".libs", ".data"))
        out.add(parts[:2] if namespace and len(parts) > 2 else parts[:1])
    return out


def isolated_python(where: Path, names: list[str]) -> Path:
    """A virtual environment at ``where`` holding only ``names`` and their requirements;
    returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = where / "lib" / version / "site-packages"
    for dist in closure(names).values():
        origin = Path(dist.locate_file(""))
        for root in _roots(dist, origin):
            target = site.joinpath(*root)
            if target.exists() or not origin.joinpath(*root).exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(origin.joinpath(*root), target)
    return where / "bin" / "python"
