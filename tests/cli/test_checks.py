"""The flag and output checks every command runs before it starts (cli.checks)."""

from __future__ import annotations

import math

import pytest

from cli.checks import (
    EPOCHS,
    POSITIVE,
    RECALL,
    TEST_FRACTION,
    Range,
    at_least,
    bad_number,
    existing_outputs,
    file_name_problem,
    file_problem,
    folder_problem,
    names_problem,
)


@pytest.mark.parametrize("allowed, inside, outside", [
    (at_least(1), [1, 7, 10**9], [0, -3]),
    (EPOCHS, [1, 10_000], [0, 10_001]),
    (POSITIVE, [1e-9, 5.0], [0.0, -5.0, math.nan, math.inf]),
    (RECALL, [1.0, 0.5], [0.0, 1.0001, math.nan]),
    (TEST_FRACTION, [0.0, 0.49], [0.5, 0.7, -0.1]),
])
def test_ranges(allowed, inside, outside):
    assert all(allowed.contains(v) for v in inside)
    assert not any(allowed.contains(v) for v in outside)


def test_bad_number_names_the_first_flag_and_value_out_of_range():
    assert bad_number([("--a", 3, at_least(1)), ("--b", None, at_least(1))]) is None
    assert bad_number([("--a", 3, at_least(1)), ("--sizes", [32, -8], at_least(8))]) == (
        "--sizes must be at least 8, not -8.")
    assert bad_number([("--r", math.nan, RECALL)]) == "--r must be in (0, 1], not nan."
    assert Range(0, 0.5, low_open=True).describe() == "in (0, 0.5]"


def test_folder_problem_creates_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    assert folder_problem(tmp_path / "new" / "deeper", "--out") is None
    assert not (tmp_path / "new").exists()
    assert "is a file, not a folder" in folder_problem(tmp_path / "f", "--out")
    assert "cannot be created: " in folder_problem(tmp_path / "f" / "sub", "--out")


def test_file_problem(tmp_path):
    (tmp_path / "old.csv").write_text("x")
    assert file_problem(tmp_path / "new.csv", "--out") is None
    assert "is a folder" in file_problem(tmp_path, "--out")
    assert "--force" in file_problem(tmp_path / "old.csv", "--out")
    assert file_problem(tmp_path / "old.csv", "--out", force=True) is None


def test_existing_outputs_names_each_earlier_file(tmp_path):
    (tmp_path / "a.pth").write_text("x")
    assert existing_outputs([tmp_path / "b.md"], "--out") is None
    message = existing_outputs([tmp_path / "a.pth", tmp_path / "b.md"], "--out")
    assert str(tmp_path / "a.pth") in message and "b.md" not in message and "--force" in message


@pytest.mark.parametrize("name", ["../x", "a/b", ".x", "-x", "", "a" * 65, "a b"])
def test_file_names_that_are_refused(name):
    assert "--name" in file_name_problem(name, "--name")


def test_plain_file_names_pass():
    assert file_name_problem("team_a-2.v1", "--name") is None


def test_a_read_only_place_is_named(tmp_path, monkeypatch):
    # chmod cannot show it to root (as tests often run): the check asks os.access
    monkeypatch.setattr("cli.checks.os.access", lambda path, mode: False)
    assert "is not writable" in folder_problem(tmp_path / "out", "--out")
    assert "is not writable" in file_problem(tmp_path / "p.csv", "--out")


def test_names_problem():
    assert names_problem(None, ("a", "b"), "--x") is None
    assert names_problem(["b"], ("a", "b"), "--x", alone="none") is None
    assert names_problem(["none"], ("a", "b"), "--x", alone="none") is None
    assert names_problem(["c"], ("a", "b"), "--x", alone="none") == \
        "--x: unknown c; choose from a, b, or none."
    assert "stands alone" in names_problem(["a", "none"], ("a", "b"), "--x", alone="none")
