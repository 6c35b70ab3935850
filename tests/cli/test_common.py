"""What the commands share (cli.common): the error paragraph, help defaults, progress bars."""

from __future__ import annotations

import argparse

import pytest

from cli import common
from cli.common import EXIT_USAGE, HelpFormatter, fail, progress_bar

LONG_FLAG = "--a-very-long-flag-name-with-many-hyphens-that-must-stay-whole"
LONG_PATH = "/data/some-delivery-folder/with-hyphenated-sub-folders/and-more-of-them/arrays.zip"


def test_fail_returns_2_and_wraps_a_paragraph_to_stderr(capsys):
    message = ("the data cannot be used: " + "every word of this sentence is ordinary " * 5
               + f"then {LONG_FLAG} and {LONG_PATH} follow.")
    assert fail(message) == EXIT_USAGE == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.rstrip("\n").splitlines()
    assert len(lines) > 1 and all(len(line) <= 99 for line in lines if " " in line)
    assert any(LONG_FLAG in line for line in lines), "a flag was split"
    assert any(LONG_PATH in line for line in lines), "a path was split"
    assert " ".join(lines) == " ".join(message.split())


def test_fail_keeps_a_multi_line_message_and_adds_the_hint(capsys):
    assert fail("E1.npy: broken\nE2.npy: too   small", hint="Run check_data.py.") == 2
    err = capsys.readouterr().err
    assert err == "E1.npy: broken\nE2.npy: too   small\nRun check_data.py.\n"


def test_help_shows_defaults_and_keeps_the_description_lines(capsys):
    parser = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter,
                                     description="first line\n  second line kept")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: 30)" in text and "first line\n  second line kept" in text


def test_progress_bar_updates_lazily_and_closes(monkeypatch):
    made = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.kw, self.n, self.refreshed, self.closed = total, kw, 0, 0, False
            made.append(self)

        def refresh(self):
            self.refreshed += 1

        def close(self):
            self.closed = True

    monkeypatch.setattr(common, "tqdm", Bar)
    update, close = progress_bar("loading data")
    close()  # nothing drawn yet: nothing to close
    assert made == []
    update(3, 10)
    update(7, 10)
    (bar,) = made
    assert bar.total == 10 and bar.n == 7 and bar.refreshed == 2
    assert bar.kw["desc"] == "loading data" and bar.kw["unit"] == "eraser"
    close()
    assert bar.closed


def test_help_leaves_out_defaults_that_say_nothing(capsys):
    parser = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    parser.add_argument("--study", default=None, help="study name (default: the folder's)")
    parser.add_argument("--force", action="store_true", help="replace earlier files")
    parser.add_argument("--epochs", type=int, default=30, help="epochs")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 30)" in text
