"""Loading a delivery for a command: a progress bar while it decodes, the problems (each
naming its file or row) when it cannot be used. Apart from ``cli.common`` so that commands
that read no images (``make_synthetic.py``, ``check_data.py --dry-run``) load no torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli.common import fail, progress_bar
from data.dataset import EraserSet, load_data
from data.errors import DataError, format_problems


def load_or_fail(path: str | Path, labels: Sequence[str | Path] | None, *,
                 cache_dir: str | Path | None, what: str = "used", hint: bool = True,
                 **kwargs: Any) -> EraserSet | None:
    """``data.load_data`` behind a progress bar; on bad data it prints the problems (naming
    each file or row) and returns ``None``, and the command returns :data:`EXIT_USAGE`."""
    update, close = progress_bar("loading data")
    try:
        return load_data(path, labels, cache_dir=cache_dir, progress=update, **kwargs)
    except DataError as exc:
        close()
        fail(f"{path} cannot be {what}:\n{format_problems(exc.problems)}"
             + ("\nRun `python check_data.py` on it for the full report." if hint else ""))
        return None
    finally:
        close()
