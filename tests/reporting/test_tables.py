"""Tables and staged output folders shared by every report (reporting.tables)."""

from __future__ import annotations

import csv
import math

import pytest

from reporting.tables import markdown_table, staged_output, write_csv


def test_staged_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(out) as stage:
        (stage / "half.csv").write_text("x")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_staged_output_moves_everything_in_on_success_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    (out / "a.csv").write_text("stale")
    with staged_output(out) as stage:
        assert stage.parent == tmp_path and stage != out
        (stage / "a.csv").write_text("new")
        (stage / "figs").mkdir()
        (stage / "figs" / "b.png").write_bytes(b"png")
        assert (out / "a.csv").read_text() == "stale"  # nothing appears before the end
    assert (out / "a.csv").read_text() == "new" and (out / "figs" / "b.png").is_file()
    assert (out / "old.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging folder gone


def test_write_csv_columns_and_extra_keys(tmp_path):
    rows = [{"id": "E1", "p": 0.5, "note": "x"}, {"id": "E2", "p": 0.25}]
    path = write_csv(tmp_path / "sub" / "t.csv", rows, columns=["id", "p"])
    assert path.read_text().splitlines() == ["id,p", "E1,0.5", "E2,0.25"]
    with open(write_csv(tmp_path / "all.csv", rows[:1])) as f:
        assert list(csv.DictReader(f)) == [{"id": "E1", "p": "0.5", "note": "x"}]
    assert write_csv(tmp_path / "empty.csv", []).read_text().strip() == ""
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["t.csv"]  # no temp file left


def test_markdown_table_formats_numbers_and_missing_cells():
    rows = [{"name": "a", "v": 0.12345, "n": 3}, {"name": "b", "v": 12.345}]
    assert markdown_table(rows, headers=["class", "AUC", "count"]).splitlines() == [
        "| class | AUC | count |", "|---|---|---|", "| a | 0.123 | 3 |", "| b | 12.3 |  |"]
    assert markdown_table([{"v": math.nan}]).splitlines()[-1] == "|  |"
    assert markdown_table(rows, columns=["v"]).splitlines()[0] == "| v |"
    assert markdown_table([]) == "_(none)_"


@pytest.mark.parametrize("value", [-0.5, 10.0, 100.25])
def test_markdown_table_switches_to_one_decimal_from_ten(value):
    cell = markdown_table([{"v": value}]).splitlines()[-1]
    assert cell == (f"| {value:.1f} |" if abs(value) >= 10 else f"| {value:.3f} |")


def test_latex_tables_are_booktabs_with_escaped_text_and_aligned_numbers():
    from reporting.tables import latex_table

    tex = latex_table([{"class": "print_error", "AUC-PR": 0.81234, "n": 12},
                       {"class": "50% & more", "AUC-PR": float("nan"), "n": 3}])
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{lrr}" and lines[1] == r"\toprule"
    assert r"print\_error & 0.812 & 12 \\" in tex and r"50\% \& more &  & 3 \\" in tex
    assert lines[-1] == r"\end{tabular}" and r"\bottomrule" in tex


def test_latex_table_without_rows_keeps_its_header_and_stays_valid():
    from reporting.tables import latex_table

    tex = latex_table([], ["id", "p"])
    assert tex.splitlines()[:3] == [r"\begin{tabular}{ll}", r"\toprule", r"id & p \\"]
    assert tex.rstrip().endswith(r"\end{tabular}")
    assert latex_table([]).startswith("%")  # nothing to lay out: a comment, not a tabular
