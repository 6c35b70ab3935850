"""The manuscript draft (reporting.manuscript, report.py --manuscript --pdf): every section of
the brief in order, the study's numbers, the report's own figures and tables, and a PDF of at
most six pages without undefined references or lines sticking out."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import report
import run_study
from reporting.manuscript import (
    MAX_PAGES,
    TitlePage,
    compile_pdf,
    engine,
    read_log,
    what_to_cut,
)

SECTIONS = ("Introduction", "Data Analysis and Pre-processing", "Methodology",
            "Experimental Setup", "Results", "Discussion", "Conclusion")
NEEDS_TEX = pytest.mark.skipif(engine() is None and not os.environ.get("REQUIRE_TEX"),
                               reason="no TeX engine here (CI installs one: REQUIRE_TEX=1)")


@pytest.fixture(scope="module")
def drafted(synthetic, tmp_path_factory):
    """report.py --manuscript on a tiny study with a test split."""
    tmp = tmp_path_factory.mktemp("manuscript")
    url = f"sqlite:///{tmp / 'studies.db'}"
    cache = str(tmp / "cache")
    assert run_study.main(["--data", str(synthetic), "--study", "ms", "--storage", url,
                           "--n-trials", "3", "--epochs", "2", "--sizes", "32",
                           "--cache-dir", cache, "--pruner", "none", "--no-estimate",
                           "--test-fraction", "0.2"]) == 0
    out = tmp / "report"
    args = ["--study", "ms", "--storage", url, "--out", str(out), "--cache-dir", cache,
            "--manuscript", "--title", "Erasers & their 100% inspection",
            "--authors", "Ada Lovelace (s1)", "Alan Turing (s2)", "--group", "team_a"]
    assert report.main(args) == 0
    return out, args


def test_every_section_of_the_brief_in_order_with_the_title_page(drafted):
    out, _ = drafted
    tex = (out / "manuscript.tex").read_text()
    found = [tex.index(rf"\section{{{s}}}") for s in SECTIONS]
    assert found == sorted(found)
    assert r"Erasers \& their 100\% inspection" in tex  # escaped, not broken
    assert "Ada Lovelace (s1)" in tex and "Group team\\_a" in tex
    assert "Abstract" in tex and tex.count(r"\towrite{") >= 4  # what only the team can write
    assert "leaderboard" in tex


def test_the_numbers_and_floats_are_the_studys_own(drafted):
    out, _ = drafted
    tex = (out / "manuscript.tex").read_text().split(r"\begin{document}")[1]
    assert "64 labelled erasers" in tex and "test erasers" in tex
    for name in re.findall(r"\\includegraphics\[[^]]*\]\{([^}]+)\}", tex):
        assert (out / name).is_file(), name
    for name in re.findall(r"\\fittable\{[^}]*\}\{([^}]+)\}", tex):
        assert (out / name).is_file(), name
    labels = set(re.findall(r"\\label\{([^}]+)\}", tex))
    assert set(re.findall(r"\\ref\{([^}]+)\}", tex)) <= labels  # nothing dangles
    assert {"tab:architecture", "tab:training", "tab:validation_metrics"} <= labels


@NEEDS_TEX
def test_it_compiles_to_at_most_six_clean_pages(drafted, capsys):
    out, args = drafted
    assert report.main([*args, "--pdf", "--out", str(out.parent / "pdf")]) == 0
    printed = capsys.readouterr()
    pdf = out.parent / "pdf" / "manuscript.pdf"
    assert pdf.is_file() and f"{pdf} (" in printed.out
    done = read_log(pdf.with_suffix(".log"))
    assert 1 <= done.pages <= MAX_PAGES and "warning" not in printed.err
    assert not done.undefined and not done.overfull
    tex = (out.parent / "pdf" / "manuscript.tex").read_text()
    shown = set(re.findall(r"\\includegraphics\[[^]]*\]\{([^}]+)\}", tex))
    assert shown and shown <= set(done.graphics)  # every figure is in the PDF


def test_the_log_reader_and_what_to_cut(tmp_path):
    log = tmp_path / "m.log"
    log.write_text("LaTeX Warning: Reference `fig:x' on page 2 undefined on input line 9.\n"
                   "Overfull \\hbox (0.5pt too wide) in paragraph\n"
                   "Overfull \\hbox (12.0pt too wide) in paragraph\n"
                   "<a.pdf, id=3> <b.pdf>\nOutput written on m.pdf (7 pages, 1234 bytes).\n")
    done = read_log(log)
    assert done.pages == 7 and done.too_long and done.undefined == ("fig:x",)
    assert done.overfull == (12.0,) and done.graphics == ("a.pdf", "b.pdf")
    tex = ("\\begin{figure*}[tbp]\\caption{x}\\label{fig:curves}\\end{figure*}"
           "\\begin{table}[tbp]\\label{tab:small}\\end{table}")
    assert what_to_cut(tex) == ["the full-width figure 'curves'", "the table 'small'"]


def test_without_an_engine_pdf_is_refused_before_anything_is_written(drafted, tmp_path,
                                                                    monkeypatch, capsys):
    _, args = drafted
    monkeypatch.setattr(report, "engine", lambda: None)
    out = tmp_path / "none"
    assert report.main([*args, "--pdf", "--out", str(out)]) == 2
    assert "needs a TeX engine" in capsys.readouterr().err and not out.exists()
    with pytest.raises(Exception, match="no TeX engine"):
        monkeypatch.setattr("reporting.manuscript.engine", lambda: None)
        compile_pdf(Path(tmp_path / "x.tex"))
    assert TitlePage().title
