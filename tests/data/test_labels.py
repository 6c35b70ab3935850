"""Label CSVs (data.labels): parsing, every problem with its row, reconciling two files."""

from __future__ import annotations

import pytest

from data.errors import DataError
from data.labels import (
    BINARY,
    MULTICLASS,
    find_label_csvs,
    load_labels,
    parse_label,
    read_label_csv,
)


@pytest.mark.parametrize(("text", "parsed"), [
    ("1", (BINARY, 1)), (" 0 ", (BINARY, 0)), ('"1_0"', (MULTICLASS, (1, 0))),
    ("0_1", (MULTICLASS, (0, 1))), ("2", None), ("1_2", None), ("yes", None), ("", None)])
def test_parse_label(text, parsed):
    assert parse_label(text) == parsed


def test_label_csv_variants(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("E1.npy;1_0\nE2;0_0\n")  # no header, semicolons, extensions
    lf, problems = read_label_csv(p)
    assert lf.kind == "multiclass" and lf.header is None and not problems
    assert lf.labels == {"E1": (1, 0), "E2": (0, 0)}
    p.write_text("name,defective\nA,1\nB,0\nC,2\nA,0\nB,0\n")
    lf, problems = read_label_csv(p)
    assert lf.kind == "binary"
    msgs = {pr.kind: pr for pr in problems}
    assert "row 4" in msgs["bad-label"].where and "'2'" in msgs["bad-label"].message
    assert "row 5" in msgs["conflicting-duplicate"].where
    assert msgs["duplicate"].level == "warning"


def test_empty_and_header_only_csv(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("ID,error\n")
    for name in ("a.csv", "b.csv"):
        lf, problems = read_label_csv(tmp_path / name)
        assert lf is None and problems[0].kind == "empty-labels"


def test_binary_and_multiclass_disagreement_is_reported(tmp_path):
    (tmp_path / "m.csv").write_text("ID,label\nA,1_0\nB,0_0\nC,0_1\n")
    (tmp_path / "b.csv").write_text("ID,error\nA,1\nB,1\nC,1\n")
    labels, problems = load_labels([tmp_path / "m.csv", tmp_path / "b.csv"])
    assert labels.kind == "multiclass" and labels.targets["B"] == (0, 0)
    (disagree,) = [p for p in problems if p.kind == "labels-disagree"]
    assert "B (0_0 vs 1)" in disagree.message


def test_two_multiclass_csvs_are_ambiguous(tmp_path):
    (tmp_path / "m1.csv").write_text("A,1_0\n")
    (tmp_path / "m2.csv").write_text("A,1_0\n")
    with pytest.raises(DataError, match="--labels"):
        load_labels([tmp_path / "m1.csv", tmp_path / "m2.csv"])


def test_missing_file_and_a_file_that_is_not_labels(tmp_path):
    lf, problems = read_label_csv(tmp_path / "nope.csv")
    assert lf is None and problems[0].kind == "missing-labels" and "--labels" in str(problems[0])
    (tmp_path / "preds.csv").write_text("id,prob\nE1,0.3\nE2,0.9\n")
    lf, problems = read_label_csv(tmp_path / "preds.csv")
    assert lf is None and problems[0].level == "error" and problems[0].kind == "bad-labels"
    lf, problems = read_label_csv(tmp_path / "preds.csv", explicit=False)
    assert lf is None and problems[0].level == "warning" and "Skipped" in problems[0].message


def test_binary_only_labels_fill_both_columns_and_warn(tmp_path):
    (tmp_path / "b.csv").write_text("ID,error\nA.npy,1\nB.npy,0\n")
    labels, problems = load_labels([tmp_path / "b.csv"])
    assert labels.kind == BINARY and labels.targets == {"A": (1, 1), "B": (0, 0)}
    assert [p.kind for p in problems] == ["binary-only"]
    assert labels.describe() == f"{tmp_path / 'b.csv'} (binary)"


def test_ids_in_only_one_of_the_two_files_are_named(tmp_path):
    (tmp_path / "m.csv").write_text("A,1_0\nB,0_0\nC,0_1\n")
    (tmp_path / "b.csv").write_text("A,1\nB,0\nD,1\n")
    labels, problems = load_labels([tmp_path / "m.csv", tmp_path / "b.csv"])
    assert sorted(labels.targets) == ["A", "B", "C"]  # the multi-class file gives the targets
    missing = {p.where: p.message for p in problems if p.kind == "labels-missing-id"}
    assert "C" in missing[str(tmp_path / "b.csv")] and "D" in missing[str(tmp_path / "m.csv")]


def test_no_label_file_at_all_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no label CSV"):
        load_labels([])


def test_find_label_csvs_looks_only_in_the_folder(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "clean.csv").write_text("A,1\n")
    for name in ("b.CSV", "a.csv", "notes.txt"):
        (tmp_path / name).write_text("A,1\n")
    assert [p.name for p in find_label_csvs(tmp_path)] == ["a.csv", "b.CSV"]


@pytest.mark.parametrize(("text", "parsed"), [
    ("1.0", (BINARY, 1)), ("0.0", (BINARY, 0)), ("1.", (BINARY, 1)), ("0.5", None),
    ("1.01", None)])
def test_float_binary_labels_as_pandas_writes_them(text, parsed):
    assert parse_label(text) == parsed


def test_a_field_over_the_csv_limit_names_its_row_even_when_found(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("ID,label\nE1,1_0\nE2," + "1" * 200_000 + "\n")
    for explicit in (True, False):
        lf, problems = read_label_csv(p, explicit=explicit)
        assert lf is None and problems[0].level == "error"
        assert "row 3" in problems[0].message and "field" in problems[0].message


def test_found_csvs_that_hold_no_labels_are_named_as_such(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("when,who\nmonday,anna\n")
    with pytest.raises(DataError) as info:
        load_labels([p], explicit=False)
    last = info.value.problems[-1]
    assert last.where == str(p) and "is not a label file" in last.message
    assert "no label CSV found" not in last.message
