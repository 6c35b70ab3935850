"""report.py on a tiny study: every figure and table, linked from report.md, and every
figure's text at least 8 pt at its intended width."""

import csv
import re
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from matplotlib.text import Text
from PIL import Image

import report
import run_study
from data.augment import AugmentConfig
from model import BackboneConfig, CNNConfig
from reporting import plots, study_report
from reporting.study_report import Report, StudyData, architecture_rows
from search.export import study_data
from training.config import RunConfig, TrainConfig

FIGURES = ("class_balance", "samples_0_0", "samples_0_1", "samples_1_0", "samples_1_1",
           "label_noise", "optimization_history", "intermediate_values", "best_trial_curves",
           "xy_confusion", "confusion_matrices", "pr_curves", "roc_curves", "threshold_sweep",
           "worst_errors")
TABLES = ("class_balance", "label_noise", "architecture", "search_space", "study_bounds",
          "best_training", "timing", "trials", "validation_metrics", "validation_vs_test",
          "xy_confusion", "worst_errors")
FLAGGED = ("E00001", "E00005", "E00009")  # a label_issues.csv of three suspects


def text_sizes(fig) -> list[float]:
    """The size of every piece of text a figure draws (tick labels included)."""
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


@pytest.fixture(scope="module")
def study(synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{tmp / 'studies.db'}"
    flagged = tmp / "label_issues.csv"
    flagged.write_text("rank,id,given_label,suggested_label,confidence,quality\n" + "".join(
        f"{i + 1},{k},0_0,0_1,0.9,0.1\n" for i, k in enumerate(FLAGGED)))
    env = {"url": url, "tmp": tmp, "cache": str(tmp / "cache"), "flagged": str(flagged)}
    assert run_study.main(["--data", str(synthetic), "--study", "tiny", "--storage", url,
                           "--n-trials", "3", "--epochs", "1", "--sizes", "32",
                           "--cache-dir", env["cache"], "--pruner", "none", "--no-estimate",
                           "--test-fraction", "0.2", "--flagged", str(flagged)]) == 0
    return env


@pytest.fixture(scope="module")
def paper(study, tmp_path_factory):
    """The report of the tiny study in the paper style, with every figure's size and text
    sizes recorded as it is saved."""
    out = tmp_path_factory.mktemp("reports") / "tiny"
    args = ["--study", "tiny", "--storage", study["url"], "--out", str(out),
            "--cache-dir", study["cache"], "--flagged", study["flagged"]]
    assert report.main([*args, "--dry-run"]) == 0
    assert not out.exists()
    seen = {}
    figure = Report.figure

    def recording(self, section, fig, name, caption):
        seen[name] = (tuple(fig.get_size_inches()), text_sizes(fig))
        figure(self, section, fig, name, caption)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Report, "figure", recording)
        assert report.main(args) == 0
    return out, seen


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_writes_and_links_every_figure_and_table(paper, study):
    out, seen = paper
    md = (out / "report.md").read_text()
    assert "validation erasers chose this trial among 3 completed ones" in md  # the caveat
    figures = [*FIGURES, *(("param_importances", "parallel_coordinates")
                           if (out / "param_importances.png").exists() else ())]
    for name in figures:  # PDF for the paper, 300 dpi PNG, linked with a numbered caption
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file(), name
        assert re.search(rf"\]\({name}\.png\)\n\n\*Figure \d+\. .+\* \(\[PDF\]\({name}\.pdf\)\)",
                         md), name
    numbers = [int(n) for n in re.findall(r"\*Figure (\d+)\.", md)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= len(FIGURES)
    for name in TABLES:  # every table markdown in report.md, CSV and booktabs LaTeX
        tex = (out / f"{name}.tex").read_text()
        assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex, name
        assert (out / f"{name}.csv").is_file() and f"`{name}.csv`" in md, name
        assert f"`{name}.tex`" in md, name
    assert not list(out.glob("*.svg"))
    with Image.open(out / "class_balance.png") as png:  # 300 dpi at 3.3 in
        assert png.size[0] == round(3.3 * 300)
    assert (out / "worst_errors.pdf").read_bytes().startswith(b"%PDF")
    # the write-up's sections, in its order
    assert re.findall(r"^## (\d)\. ", md, flags=re.M) == ["1", "2", "3", "4"]
    assert set(seen) == set(figures) | ({"augmentation"} & set(seen))


def test_paper_figures_are_a_column_or_a_page_wide_with_no_text_under_8_pt(paper):
    _, seen = paper
    for name, ((width, height), sizes) in seen.items():
        assert width in (3.3, 7.0) and height <= 8.5, (name, width, height)
        assert sizes and min(sizes) >= 8, (name, min(sizes))


def test_tables_hold_the_right_numbers(paper, study):
    out, _ = paper
    s = optuna.load_study(study_name="tiny", storage=study["url"])
    assert len(rows(out / "trials.csv")) == len(s.trials) == 3
    metrics = {r["class"]: r for r in rows(out / "validation_metrics.csv")}
    n_val = s.user_attrs["split"]["n_val"]
    assert {int(r["of"]) for r in metrics.values()} == {n_val}
    assert (int(metrics["defect (any)"]["positives"]) + int(metrics["no defect"]["positives"])
            == n_val)
    assert {"lr", "input_size", "depth"} <= {r["parameter"] for r in
                                            rows(out / "search_space.csv")}
    assert "device(s)" in (out / "timing.csv").read_text()
    xy = rows(out / "xy_confusion.csv")  # 4 x 4: every validation eraser once
    assert [r["labelled"] for r in xy] == ["0_0", "0_1", "1_0", "1_1"]
    assert sum(int(v) for r in xy for k, v in r.items() if k != "labelled") == n_val
    for r in rows(out / "worst_errors.csv"):  # all wrong, the most confident first
        assert r["labelled"] != r["predicted"]
    p = [float(r["p_labelled"]) for r in rows(out / "worst_errors.csv")]
    assert p == sorted(p)
    test = rows(out / "validation_vs_test.csv")
    assert test[-1]["class"] == "graded (mean of 3)" and "test chance AUC-PR" in test[0]
    balance = {r["group"]: r for r in rows(out / "class_balance.csv")}
    sp = s.user_attrs["split"]
    assert int(balance["defective"]["all"]) == s.user_attrs["data"]["defect"]
    assert sum(int(v["test"]) for k, v in balance.items() if k.startswith("class")) == \
        sp["n_test"]
    noise = rows(out / "label_noise.csv")
    assert [r["id"] for r in noise] == list(FLAGGED) and {r["suggested"] for r in noise} == {
        "0_1"}
    arch = {r["field"]: r["value"] for r in rows(out / "architecture.csv")}
    assert arch["task"] == "2 sigmoids (print, physical)" and "input_size" in arch


def test_unknown_study_no_finished_trial_or_another_flag_list_exits_2(study, capsys,
                                                                      tmp_path):
    assert report.main(["--study", "nope", "--storage", study["url"]]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("id\nE00002\n")
    assert report.main(["--study", "tiny", "--storage", study["url"], "--flagged",
                        str(other), "--out", str(tmp_path / "r")]) == 2
    assert "is not the flagged list study 'tiny' was run with (3 ids)" in " ".join(
        capsys.readouterr().err.split())
    assert report.main(["--study", "tiny", "--storage", study["url"], "--flagged",
                        str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "--flagged" in capsys.readouterr().err
    optuna.create_study(study_name="empty", storage=study["url"])
    out = study["tmp"] / "empty_report"
    assert report.main(["--study", "empty", "--storage", study["url"], "--out",
                        str(out)]) == 2
    assert "no completed trial" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r").exists()


def test_without_data_or_weights_the_report_says_what_it_left_out(study, tmp_path):
    out = tmp_path / "r"
    assert report.main(["--study", "tiny", "--storage", study["url"], "--out", str(out),
                        "--artifact-dir", str(tmp_path / "elsewhere"), "--data",
                        str(tmp_path / "moved"), "--cache-dir", study["cache"]]) == 0
    md = (out / "report.md").read_text()
    left_out = md.split("## Left out")[1]
    assert "--artifact-dir" in left_out  # the flagged ids are stored with the study
    assert "need the erasers" in left_out and "moved" in left_out
    assert (out / "optimization_history.png").is_file() and (out / "class_balance.pdf").is_file()
    assert "class 1_1 (print + physical)" in (out / "class_balance.csv").read_text()
    assert not (out / "pr_curves.png").exists() and not (out / "samples_0_0.png").exists()


@pytest.fixture
def tiny_data(study):
    s = optuna.load_study(study_name="tiny", storage=study["url"])
    return StudyData(*study_data(s, None, cache_dir=study["cache"]))


@pytest.mark.parametrize("channels", [("GRAY", "NORMAL"), ("GRAY", "AM", "G", "R", "W",
                                                           "NORMAL")])
def test_augmentation_examples_draw_the_trials_own_augmentation(tiny_data, tmp_path,
                                                                channels):
    cfg = RunConfig(model=CNNConfig(channels=channels, input_size=32, widths=(8, 16),
                                    kernel_sizes=(3, 3)),
                    augment=AugmentConfig.from_strength(1.0, 1.0))
    with plots.figure_style("paper") as style:
        r = Report(tmp_path, style)
        study_report.augmentation(r, cfg, tiny_data)
    assert (tmp_path / "augmentation.pdf").is_file() and (tmp_path / "augmentation.png").is_file()
    md = "\n".join(r.sections[study_report.SECTIONS[2]])
    assert "](augmentation.png)" in md and "rotation up to 20 deg" in md
    assert ", ".join(channels) in md
    with plots.figure_style("paper") as style:
        r = Report(tmp_path, style)
        study_report.augmentation(r, RunConfig(augment=AugmentConfig.none()), tiny_data)
    assert "trains without augmentation" in r.sections[study_report.SECTIONS[2]][0]


def test_architecture_table_has_a_row_per_field_of_either_family():
    best = SimpleNamespace(user_attrs={"params": 1234567, "macs": 2.5e8})
    scratch = architecture_rows(RunConfig(), best)
    assert {r["field"] for r in scratch} >= {"widths", "kernel_sizes", "stem", "task"}
    frozen = RunConfig(model=BackboneConfig(), train=TrainConfig(backbone_lr_scale=0.0))
    rows_ = {r["setting"]: r["value"] for r in architecture_rows(frozen, best)}
    assert rows_["backbone (timm, ImageNet weights)"] == BackboneConfig().backbone
    assert rows_["backbone training"].startswith("frozen")
    assert rows_["trainable parameters"] == "1,234,567"
    assert rows_["multiply-adds per eraser"] == "250.0 M"
    tuned = RunConfig(model=BackboneConfig(), train=TrainConfig(backbone_lr_scale=0.05))
    assert "0.05 x the head's" in {r["field"]: r["value"] for r in
                                   architecture_rows(tuned, best)}["backbone_lr_scale"]


def test_slides_figures_fit_a_slide_with_larger_text():
    rng = np.random.default_rng(0)
    truth, probs = rng.integers(0, 2, (40, 4)), rng.random((40, 4))
    thresholds = dict.fromkeys(plots.CLASSES, 0.5)
    with plots.figure_style("slides") as style:
        figs = [plots.class_panels(kind, truth, probs, thresholds, style.size("double", 0.85))
                for kind in ("confusion", "pr", "roc", "sweep")]
        figs.append(plots.channel_grid(rng.integers(0, 256, (6, 6, 16, 16)), list("abcdef"),
                                       width=style.double, max_height=style.max_height))
        for fig in figs:
            w, h = fig.get_size_inches()
            assert w == 10 and h <= 5.6
            assert min(text_sizes(fig)) >= 11
            plt.close(fig)
