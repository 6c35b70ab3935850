"""The data analysis report on a tiny synthetic delivery."""

import csv
import json
import re
from collections import Counter

import pytest

from analyze_data import main
from data import load_data
from reporting.data_report import analyze

PNGS = ("class_balance.png", "histograms.png", "mean_images.png", "mean_difference.png",
        "separability.png", "samples_0_0.png", "samples_0_1.png", "samples_1_0.png",
        "samples_1_1.png")
TABLES = ("class_balance.csv", "channel_stats.csv", "separability.csv", "summary.json",
          "report.md")


@pytest.fixture(scope="module")
def report(synthetic, tmp_path_factory):
    data = load_data(synthetic, cache_dir=tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("reports") / "data"
    return data, out, analyze(data, out, size=32, samples=2)


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_promised_file_is_written_and_linked(report):
    _, out, analysis = report
    for name in PNGS + TABLES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    for name in PNGS:
        assert f"]({name})" in md, name
    assert set(analysis.files) == {p.name for p in out.iterdir()}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".data.")]  # no stage


def test_balance_table_holds_the_right_counts(report):
    data, out, _ = report
    table = rows(out / "class_balance.csv")
    overall = {r["group"]: int(r["count"]) for r in table if r["part"] == "all"}
    codes = Counter(data.codes)
    assert overall["defect"] == int(data.defect.sum())
    assert overall["print (X=1)"] == int(data.targets[:, 0].sum())
    assert overall["physical (Y=1)"] == int(data.targets[:, 1].sum())
    assert all(overall[c] == codes[c] for c in ("0_0", "0_1", "1_0", "1_1"))
    n = {r["part"]: int(r["erasers"]) for r in table}
    assert n["all"] == len(data) == n["train"] + n["validation"]
    assert n["validation"] == round(len(data) / 5)  # k=5: fold 0 held out
    for part in ("train", "validation"):  # the classes add up in every part
        counts = [int(r["count"]) for r in table if r["part"] == part and "_" in r["group"]]
        assert sum(counts) == n[part]


def test_channel_stats_and_findings(report):
    data, out, analysis = report
    stats = rows(out / "channel_stats.csv")
    overall = [r for r in stats if r["class"] == "all"]
    assert [r["channel"] for r in overall] == ["GRAY", "AM", "G", "R", "W", "NORMAL"]
    assert all(0 <= int(r["min"]) <= float(r["mean"]) <= int(r["max"]) <= 255 for r in stats)
    assert {r["class"] for r in stats} == {"all", "0_0", "0_1", "1_0", "1_1"}
    sep = rows(out / "separability.csv")
    assert {r["target"] for r in sep} == {"print", "physical", "defect"}
    assert all(0.0 <= float(r["auroc"]) <= 1.0 for r in sep)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["erasers"] == len(data) and summary["split"]["k"] == 5
    md = (out / "report.md").read_text()
    assert any(re.search(r"separates physical defects best: AUROC of its .* = \d\.\d\d", f)
               for f in analysis.findings)
    assert all(f in md for f in analysis.findings)


def test_cli_writes_the_report_and_refuses_bad_input(delivery, tmp_path, capsys):
    out = tmp_path / "rep"
    args = [str(delivery), "--labels", str(delivery / "multi.csv"), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--size", "16", "--samples", "1",
            "--folds", "3"]
    assert main([*args, "--dry-run"]) == 0
    assert not out.exists()
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "samples_1_1.png").is_file()
    assert main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main([*args, "--folds", "1"]) == 2
    assert main([*args, "--folds", "6"]) == 2  # 3 erasers per class cannot fill 6 folds
    assert "fewer --folds" in capsys.readouterr().err
