"""Small helpers shared by the command-line entry points (the only code that prints)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:  # importing it would load optuna into every command, the light ones too
    from reporting.dashboard import Dashboard

EXIT_USAGE = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default in ``--help`` and keeps the description's line breaks. A flag
    without a default (None) or an on/off switch that is off says nothing: its help tells
    what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        if isinstance(action.default, list | tuple):  # as it is typed: "a b", not "['a', 'b']"
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def add_study_location(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                       artifact_dir: bool = True) -> None:
    """``--storage`` and ``--artifact-dir``, said the same way by every command."""
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL of the studies (default: "
                        "$OPTUNA_STORAGE, else sqlite:///studies.db)")
    if artifact_dir:
        parser.add_argument("--artifact-dir", default=None, help="the study's trial weights "
                            "and figures (default: artifacts/ next to a SQLite file, else "
                            "./artifacts)")


def fail(message: str, *, hint: str | None = None) -> int:
    """Print a user-facing error paragraph to stderr; returns exit code 2."""
    text = " ".join(message.split()) if "\n" not in message else message
    print(_fill(text) if "\n" not in text else text, file=sys.stderr)
    if hint:
        print(_fill(hint), file=sys.stderr)
    return EXIT_USAGE


def _fill(text: str) -> str:
    # Never split a flag, path or URL at a hyphen or mid-word: it must stay copy-pasteable.
    return textwrap.fill(text, 99, break_on_hyphens=False, break_long_words=False)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def progress_bar(desc: str, unit: str = "eraser") -> tuple[Callable[[int, int], None],
                                                           Callable[[], None]]:
    """A ``(done, total)`` callback drawing a tqdm bar, and a function that closes it."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            # No rate: from the cache thousands of erasers arrive in one update, and tqdm
            # would print tens of millions of erasers per second.
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} " + unit + "s [{elapsed}]")
        bar.n = done
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def serve_until_interrupted(dashboard: Dashboard) -> None:
    """For ``--keep-dashboard``: say where it is and serve until Ctrl-C."""
    if not dashboard.running:
        return
    print(f"\nThe dashboard keeps serving {dashboard.url} ; Ctrl-C stops it.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        dashboard.wait()


def hold_on_exit(dashboard: Dashboard) -> Callable[..., None]:
    """An ``ExitStack.push`` callback for ``--keep-dashboard``: after a normal end (Ctrl-C
    of the study included) keep serving until Ctrl-C; after a crash, don't wait."""
    def hold(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            serve_until_interrupted(dashboard)
    return hold
