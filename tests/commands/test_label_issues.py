"""The label-issue command end to end on a tiny noisy set, and --flagged in the search."""

import csv
import json

import optuna
import pytest

import label_issues
import run_study
from data.synth import generate
from reporting.label_report import caution

TINY_RUN = {
    "model": {"input_size": 32, "widths": [8, 16], "kernel_sizes": [3, 3],
              "convs_per_block": 1, "dense_width": 0, "task": "multilabel"},
    "train": {"epochs": 3, "batch_size": 8, "lr": 3e-3, "early_stop_patience": 0},
    "augment": {},
}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """32 erasers, half defective, a quarter of the defective ones labelled good."""
    folder = tmp_path_factory.mktemp("noisy") / "erasers"
    generate(folder, n=32, seed=3, size=32, defect_rate=0.5, noise=0.25, workers=1)
    return folder


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cross_validated_issues_and_cleaned_labels(noisy, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(TINY_RUN))
    out = tmp_path / "issues"
    args = [str(noisy), "--config", str(config), "--folds", "2", "--epochs", "1",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert label_issues.main([*args, "--dry-run"]) == 0
    assert not out.exists()
    assert "folds x up to 1 epochs: at most about" in capsys.readouterr().out
    assert label_issues.main([*args, "--write-cleaned"]) == 0
    printed = capsys.readouterr().out
    assert "flagged as suspected mislabels" in printed and "precision" in printed

    for name in ("label_issues.csv", "label_quality.csv", "top_suspects.png", "summary.md",
                 "summary.json", "labels_cleaned.csv"):
        assert (out / name).is_file(), name
    issues = read(out / "label_issues.csv")
    header = (out / "label_issues.csv").read_text().splitlines()[0]
    assert header == "rank,id,given_label,suggested_label,confidence,quality"
    quality = read(out / "label_quality.csv")
    assert len(quality) == 32 and {q["fold"] for q in quality} == {"0", "1"}
    assert sum(int(q["flagged"]) for q in quality) == len(issues)
    assert all(abs(sum(float(q[f"p_{c}"]) for c in ("0_0", "0_1", "1_0", "1_1")) - 1) < 1e-3
               for q in quality)
    cleaned = (out / "labels_cleaned.csv").read_text().splitlines()
    assert cleaned[0] == "ID,label" and len(cleaned) == 33  # the delivered header, every id
    summary = json.loads((out / "summary.json").read_text())
    # X_Y labels: how well the model sees each defect kind, not only defective vs good
    assert {"defect_auroc", "print_auroc", "physical_auroc"} <= set(summary["oof_metrics"])
    truth = summary["truth"]
    assert truth["mislabelled"] == 4  # round(0.25 * 16) injected missed defects
    assert truth["flagged"] == len(issues) and 0 <= truth["found"] <= truth["mislabelled"]
    # the report warns exactly when its own figures say the model is weak (one epoch on 16
    # erasers almost always is; the rule itself: tests/reporting/test_label_report.py)
    weak = caution(summary) is not None
    assert bool(summary["caution"]) == weak
    assert ("Caution" in (out / "summary.md").read_text()) == weak
    if weak or "none are flagged" in printed:  # a list it doubts is never suggested
        assert "python run_study.py --data" not in printed and "before passing" in printed


def test_bad_input_exits_2(noisy, tmp_path, capsys):
    base = [str(noisy), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert label_issues.main([*base, "--study", "nope", "--storage", url]) == 2
    assert "does not exist" in capsys.readouterr().err  # a mistyped path, not "no study"
    assert not (tmp_path / "none.db").exists()
    optuna.create_study(study_name="other", storage=url)
    assert label_issues.main([*base, "--study", "nope", "--storage", url]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert label_issues.main([*base, "--config", str(bad)]) == 2
    bad.write_text(json.dumps({"train": {"epochs": 0}}))
    assert label_issues.main([*base, "--config", str(bad)]) == 2
    assert label_issues.main([*base, "--config", str(bad), "--folds", "1"]) == 2
    assert not (tmp_path / "o").exists()


def test_flagged_ids_reach_the_training_weights(synthetic, tmp_path, monkeypatch, capsys):
    """run_study --flagged: the ids go into TrainData, flagged_weight is tuned, and the
    study is bound to the list."""
    import search.objective

    ids = sorted(p.stem for p in (synthetic / "arrays").glob("*.npy"))
    flagged = tmp_path / "label_issues.csv"
    flagged.write_text("rank,id,given_label\n" + "".join(f"{i},{k},0_0\n" for i, k in
                                                         enumerate(ids[:6], 1)))
    seen = []
    real_train = search.objective.train

    def spy(config, data, **kw):
        seen.append((config.train.flagged_weight, int(data.train_flagged.sum()),
                     len(data.train_flagged)))
        return real_train(config, data, **kw)

    monkeypatch.setattr(search.objective, "train", spy)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    args = ["--data", str(synthetic), "--study", "noisy", "--storage", url, "--epochs", "1",
            "--sizes", "32", "--cache-dir", str(tmp_path / "cache"), "--no-estimate"]
    assert run_study.main([*args, "--n-trials", "1", "--flagged", str(flagged)]) == 0
    assert "6 flagged erasers" in capsys.readouterr().out
    study = optuna.load_study(study_name="noisy", storage=url)
    trial = study.trials[0]
    assert 0.0 <= trial.params["flagged_weight"] <= 1.0
    assert study.user_attrs["n_flagged"] == 6 and study.user_attrs["space"]["noise_aware"]
    (weight, n_flagged_train, n_train), = seen
    assert weight == pytest.approx(trial.params["flagged_weight"])
    split_val = 64 - n_train
    assert 6 - split_val <= n_flagged_train <= 6 and n_flagged_train > 0

    other = tmp_path / "other.csv"
    other.write_text("\n".join(ids[6:9]) + "\n")
    assert run_study.main([*args, "--n-trials", "2", "--flagged", str(other)]) == 2
    assert "flagged" in capsys.readouterr().err
    assert run_study.main([*args, "--n-trials", "2"]) == 2  # nor without its list
    assert run_study.main([*args, "--n-trials", "2", "--flagged",
                           str(tmp_path / "missing.csv")]) == 2
    assert len(seen) == 1


def test_noise_bench_plans_and_writes_only_its_section(tmp_path, capsys):
    from bench import label_noise

    with pytest.raises(SystemExit) as exc:
        label_noise.main(["--help"])
    assert exc.value.code == 0 and "--dry-run" in capsys.readouterr().out
    assert label_noise.main(["--dry-run", "--levels", "0", "0.1"]) == 0
    assert "2 noise levels x (3 finder folds + 2 cleaning arms)" in capsys.readouterr().out
    assert label_noise.main(["--levels", "1.5"]) == 2

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Data path\n\nkeep me\n\n## Other\n\nme too\n")
    label_noise.write_section(f"{label_noise.SECTION}\n\nfirst\n", results)
    label_noise.write_section(f"{label_noise.SECTION}\n\nsecond\n", results)
    text = results.read_text()
    assert "keep me" in text and "me too" in text and "second" in text
    assert "first" not in text and text.count(label_noise.SECTION) == 1


def test_noise_bench_configs_load_and_paths_stay_inside_the_project(tmp_path, capsys):
    import json

    from bench import label_noise
    from training.config import RunConfig

    folder = label_noise.RESULTS.parent / "label_noise_configs"
    configs = sorted(folder.glob("*.json"))
    assert len(configs) >= 2
    for path in configs:
        RunConfig.from_dict(json.loads(path.read_text()))  # raises on a bad field
    assert (label_noise.shown_path(str(configs[0]))
            == f"bench/label_noise_configs/{configs[0].name}")
    assert label_noise.shown_path(str(tmp_path / "mine.json")) == "mine.json"
    assert label_noise.main(["--device", "quantum", "--dry-run"]) == 2
    assert "not a device" in capsys.readouterr().err


def test_noise_bench_runs_a_level_and_writes_its_results_file(tmp_path, capsys):
    from bench import label_noise

    results = tmp_path / "mine.md"
    config = label_noise.RESULTS.parent / "label_noise_configs" / "small_gray_normal_96.json"
    assert label_noise.main(["--levels", "0.2", "--n", "24", "--source-size", "16",
                             "--epochs", "1", "--folds", "2", "--config", str(config),
                             "--device", "cpu", "--workdir", str(tmp_path / "work"),
                             "--write", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.count(label_noise.SECTION) == 1 and "| 20 % |" in text
    assert "--config bench/label_noise_configs/small_gray_normal_96.json" in text
    assert (tmp_path / "work" / "oof_probs_0.2.npz").is_file()
    assert "noise 0.20: flagged" in capsys.readouterr().out
