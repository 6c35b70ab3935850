"""report.py on a tiny study: every figure and table, linked from report.md."""

import csv
import re

import optuna
import pytest

import report
import run_study

FIGURES = ("optimization_history", "intermediate_values", "confusion_matrices", "pr_curves",
           "roc_curves", "threshold_sweep")
PNG_ONLY = ("best_trial_curves.png", "false_negatives.png", "false_positives.png")
TABLES = ("class_balance.csv", "architecture.csv", "search_space.csv", "best_training.csv",
          "timing.csv", "trials.csv", "validation_metrics.csv")


@pytest.fixture(scope="module")
def study(synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{tmp / 'studies.db'}"
    env = {"url": url, "tmp": tmp, "cache": str(tmp / "cache")}
    assert run_study.main(["--data", str(synthetic), "--study", "tiny", "--storage", url,
                           "--n-trials", "3", "--epochs", "1", "--sizes", "32",
                           "--cache-dir", env["cache"], "--pruner", "none",
                           "--no-estimate"]) == 0
    return env


def test_report_writes_and_links_everything(study, capsys):
    out = study["tmp"] / "reports" / "tiny"
    args = ["--study", "tiny", "--storage", study["url"], "--out", str(out),
            "--cache-dir", study["cache"]]
    assert report.main([*args, "--dry-run"]) == 0
    assert not out.exists()
    assert report.main(args) == 0
    assert "report.md" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "validation erasers chose this trial among 3 completed ones" in md  # the caveat
    for name in TABLES:  # every table also as booktabs LaTeX, ready to \input
        tex = (out / name.replace(".csv", ".tex")).read_text()
        assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex, name
    for name in FIGURES:
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file(), name
        assert f"]({name}.png)" in md, name
    for name in PNG_ONLY:
        assert (out / name).is_file() and f"]({name})" in md, name
    for name in TABLES:
        assert (out / name).is_file() and f"`{name}`" in md, name
    if (out / "param_importances.png").exists():
        assert "](param_importances.png)" in md and "](parallel_coordinates.png)" in md
    else:
        assert "importances" in md.split("## Left out")[1]
    # the write-up's sections, in its order
    heads = re.findall(r"^## (\d)\. ", md, flags=re.M)
    assert heads == ["1", "2", "3", "4"]

    s = optuna.load_study(study_name="tiny", storage=study["url"])
    with open(out / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == len(s.trials) == 3
    with open(out / "validation_metrics.csv") as f:
        rows = {r["class"]: r for r in csv.DictReader(f)}
    n_val = s.user_attrs["split"]["n_val"]
    assert {int(r["of"]) for r in rows.values()} == {n_val}
    assert int(rows["defect (any)"]["positives"]) + int(rows["no defect"]["positives"]) == n_val
    with open(out / "search_space.csv") as f:
        params = {r["parameter"] for r in csv.DictReader(f)}
    assert {"lr", "input_size", "depth"} <= params
    assert "device(s)" in (out / "timing.csv").read_text()


def test_unknown_study_or_no_finished_trial_exits_2(study, capsys):
    assert report.main(["--study", "nope", "--storage", study["url"]]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    optuna.create_study(study_name="empty", storage=study["url"])
    out = study["tmp"] / "empty_report"
    assert report.main(["--study", "empty", "--storage", study["url"], "--out",
                        str(out)]) == 2
    assert "no completed trial" in capsys.readouterr().err
    assert not out.exists()


def test_without_data_or_weights_the_report_says_what_it_left_out(study, tmp_path):
    out = tmp_path / "r"
    assert report.main(["--study", "tiny", "--storage", study["url"], "--out", str(out),
                        "--artifact-dir", str(tmp_path / "elsewhere"), "--cache-dir",
                        study["cache"]]) == 0
    md = (out / "report.md").read_text()
    assert "## Left out" in md and "--artifact-dir" in md
    assert (out / "optimization_history.png").is_file()
    assert not (out / "pr_curves.png").exists()



def test_paper_figures_are_a_double_column_wide_with_no_text_under_8_pt():
    import matplotlib
    import numpy as np
    from matplotlib.text import Text

    from reporting.study_report import PAPER_STYLE, PAPER_WIDTH, confusion_figure, curve_figure

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (40, 4))
    probs = rng.random((40, 4))
    thresholds = dict.fromkeys(("print_error", "physical_error", "no_defect", "defect"), 0.5)
    with matplotlib.rc_context(PAPER_STYLE):
        for fig in (confusion_figure(truth, probs, thresholds),
                    curve_figure(truth, probs, thresholds, "pr")):
            fig.canvas.draw()
            assert fig.get_size_inches()[0] == PAPER_WIDTH
            sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
            assert sizes and min(sizes) >= 8
