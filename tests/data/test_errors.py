"""User-facing data problems: Problem, format_problems, DataError."""

from __future__ import annotations

from data.errors import DataError, Problem, error, format_problems, warning


def test_problem_reads_as_where_and_message():
    p = error("size", "a/E1.npy", "is 8x8 while the others are 16x16.")
    assert p == Problem("error", "size", "a/E1.npy", "is 8x8 while the others are 16x16.")
    assert str(p) == "a/E1.npy: is 8x8 while the others are 16x16."
    assert warning("dup", "x.csv row 3", "twice").level == "warning"


def test_errors_come_first_and_each_kind_is_capped():
    problems = [warning("dup", "labels.csv", "listed twice")]
    problems += [error("bad-npy", f"E{i}.npy", "is not an array.") for i in range(8)]
    problems.append(error("size", "E9.npy", "is too small."))
    text = format_problems(problems, max_per_kind=3).splitlines()
    assert text[0] == "ERROR: E0.npy: is not an array."
    assert text[3] == "ERROR: ... and 5 more like this"
    assert text[4] == "ERROR: E9.npy: is too small."
    assert text[-1] == "WARNING: labels.csv: listed twice"
    assert len(text) == 6
    assert format_problems([]) == ""


def test_data_error_carries_every_problem():
    problems = [error("a", "x", "broken."), warning("b", "y", "odd."), error("c", "z", "gone.")]
    exc = DataError(problems)
    assert exc.problems == problems
    assert [p.kind for p in exc.errors] == ["a", "c"]
    assert str(exc) == format_problems(problems)
    plain = DataError("no data at all")
    assert plain.errors[0].message == "no data at all" and "no data at all" in str(plain)
