"""Imports flow one way: model <- data <- training <- search <- reporting <- cli <- commands.

Read from the source with ``ast``, so an upward import fails here before it can tangle the
rooms. A package may import its own modules and any room below it; nothing imports a command
(the top-level scripts); ``model``, ``data`` and ``training`` never import optuna.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("model", "data", "training", "search", "reporting", "cli")
COMMANDS = sorted(p.stem for p in ROOT.glob("*.py"))
NO_OPTUNA = ("model", "data", "training")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level module)`` of every import in ``path``, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def library_files() -> list[Path]:
    return sorted(p for room in ROOMS for p in (ROOT / room).rglob("*.py"))


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_room_imports_only_rooms_below_it(path):
    room = path.relative_to(ROOT).parts[0]
    allowed = set(ROOMS[: ROOMS.index(room) + 1])
    bad = [f"line {line}: {name}" for line, name in imported_modules(path)
           if (name in ROOMS and name not in allowed) or name in COMMANDS
           or (room in NO_OPTUNA and name in ("optuna", "optuna_dashboard"))]
    assert not bad, f"{path.relative_to(ROOT)} imports upward: {bad}"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another(command):
    bad = [name for _, name in imported_modules(ROOT / f"{command}.py") if name in COMMANDS]
    assert not bad, f"{command}.py imports the command(s) {bad}"


@pytest.mark.parametrize("package, absent", [
    ("model", ("optuna", "data", "training", "search", "reporting", "sklearn.model_selection")),
    ("data", ("optuna", "training", "search", "reporting")),
    ("training", ("optuna", "search", "reporting")),
])
def test_importing_a_room_loads_nothing_above_it(package, absent):
    # Lazy imports inside functions are invisible to the static check; a real import is not.
    code = (f"import sys, {package}, importlib; "
            f"[importlib.import_module(m) for m in {[m for m in module_names(package)]!r}]; "
            f"print([m for m in sys.modules if m.split('.')[0] in {absent!r} "
            f"or m in {absent!r}])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"import {package} loaded {proc.stdout.strip()}"


def module_names(package: str) -> list[str]:
    return [f"{package}.{p.stem}" for p in sorted((ROOT / package).glob("*.py"))
            if p.stem != "__init__"]
