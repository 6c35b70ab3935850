"""The user's whole chain through the command-line entry points, on data the project never
saw: pack-style ids, other header names, PNGs in a zip, label files found automatically."""

import csv
import shutil

import pytest
import torch

import export_best
import predict
import run_study
from data.synth import generate


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """48 erasers as images.zip, ids like P0004_E02, headers the project never used."""
    src = tmp_path_factory.mktemp("src")
    generate(src, n=48, seed=5, size=48, defect_rate=0.5, id_format="P{pack:04d}_E{k:02d}",
             pack_size=4, zip_images=True, workers=1)
    folder = tmp_path_factory.mktemp("delivery")
    shutil.copy(src / "images.zip", folder / "images.zip")
    rows = read_csv(src / "labels_multiclass.csv")[1:]
    (folder / "quality.csv").write_text("".join(f"{k},{v}\n" for k, v in rows))  # no header
    binary = read_csv(src / "labels_binary.csv")[1:]
    (folder / "defects.csv").write_text(
        "Sample;Defective\n" + "".join(f"{k}.png;{v}\n" for k, v in binary))
    return folder


@pytest.fixture
def env(tmp_path, foreign):
    return {"data": str(foreign), "url": f"sqlite:///{tmp_path / 'studies.db'}",
            "cache": str(tmp_path / "cache"), "tmp": tmp_path}


def study_args(env, *extra):
    return ["--data", env["data"], "--study", "e2e", "--storage", env["url"],
            "--n-trials", "2", "--epochs", "2", "--sizes", "32", "--cache-dir", env["cache"],
            "--group-regex", r"^(P\d+)_", "--no-estimate", *extra]  # the dry run measures


def test_search_export_predict(env, capsys):
    assert run_study.main(study_args(env)) == 0
    out = capsys.readouterr().out
    assert "Best trials of 'e2e'" in out and "optuna-dashboard sqlite:///" in out
    assert "erasers      48" in out

    # the same command again: the study already holds its total, nothing is trained
    assert run_study.main(study_args(env)) == 0
    assert "already holds 2 finished trials" in capsys.readouterr().out

    export_dir = env["tmp"] / "exports"
    assert export_best.main(["--study", "e2e", "--group", "team_a", "--storage", env["url"],
                             "--out", str(export_dir), "--cache-dir", env["cache"]]) == 0
    out = capsys.readouterr().out
    assert "difference 0.0000" in out
    pth = export_dir / "team_a.pth"
    ckpt = torch.load(pth, weights_only=True)
    assert ckpt["group"] == "team_a" and ckpt["study"] == "e2e" and "state_dict" in ckpt
    assert ckpt["class_names"] == ["print_error", "physical_error", "no_defect"]

    preds = env["tmp"] / "preds.csv"
    assert predict.main([str(pth), env["data"], "--out", str(preds), "--cache-dir",
                         env["cache"]]) == 0
    out = capsys.readouterr().out
    assert "print_error" in out and "no_defect" in out and "mean (graded)" in out
    with open(preds) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 and rows[0]["id"].startswith("P0000_E")
    assert list(rows[0])[:5] == ["id", "prob_defect", "pred_defect", "prob_print",
                                 "prob_physical"]
    assert all(0.0 <= float(r["prob_defect"]) <= 1.0 for r in rows)


def test_resume_to_a_larger_total(env, capsys):
    assert run_study.main(study_args(env)) == 0
    args = study_args(env)
    args[args.index("--n-trials") + 1] = "3"
    assert run_study.main(args) == 0
    import optuna

    study = optuna.load_study(study_name="e2e", storage=env["url"])
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 3


def test_dry_run_trains_nothing_and_writes_no_study(env, capsys):
    db = env["tmp"] / "studies.db"
    assert run_study.main([*study_args(env), "--dry-run", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "nothing trained" in out and "the dry run does not create it" in out
    assert "plan    a median trial (" in out and "full trials" in out  # measured here
    assert not db.exists() and not (env["tmp"] / "artifacts").exists()
    assert run_study.main([*study_args(env), "--dry-run", "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "a median trial" not in out and "not timed (--no-estimate)" in out

    # with a storage that exists: checked, left as it was
    assert run_study.main([*study_args(env), "--study", "other", "--n-trials", "1",
                           "--epochs", "1"]) == 0
    before = db.read_bytes()
    assert run_study.main([*study_args(env), "--dry-run"]) == 0
    assert db.read_bytes() == before
    import optuna

    assert [s.study_name for s in optuna.get_all_study_summaries(env["url"])] == ["other"]


def test_pretrained_backbones_search_export_and_resume(env, backbone_weights, capsys):
    args = ["--data", env["data"], "--study", "bb", "--storage", env["url"], "--n-trials", "2",
            "--epochs", "2", "--cache-dir", env["cache"], "--no-estimate",
            "--backbones", "mobilenetv3_large_100", "--families", "frozen",
            "--weights", str(backbone_weights)]
    assert run_study.main(args) == 0
    out = capsys.readouterr().out
    assert "family  mobilenetv3_large_100 (ImageNet, frozen)\n" in out  # no scratch CNN
    import optuna
    study = optuna.load_study(study_name="bb", storage=env["url"])
    assert study.user_attrs["space"]["backbones"] == ["mobilenetv3_large_100"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.params["backbone_mode"] == "frozen" for t in done)
    # exported with every weight: it loads and predicts with no weights around
    out_dir = env["tmp"] / "export"
    assert export_best.main(["--study", "bb", "--group", "BB", "--storage", env["url"],
                             "--out", str(out_dir), "--cache-dir", env["cache"],
                             "--onnx", "--no-pt2"]) == 0
    plain = torch.load(out_dir / "BB.pth", weights_only=True)
    assert plain["arch"]["backbone"] == "mobilenetv3_large_100"
    # resumed without the flags, the study keeps its families
    assert run_study.main([*args[:10], "--n-trials", "3", "--dry-run"]) == 0
    assert "family  mobilenetv3_large_100" in capsys.readouterr().out


def test_backbone_flags_are_checked_and_missing_weights_said_once(env, backbone_weights,
                                                                  capsys):
    assert run_study.main([*study_args(env), "--backbones", "vgg11", "--dry-run"]) == 2
    assert "--backbones: unknown vgg11" in capsys.readouterr().err
    assert run_study.main([*study_args(env), "--weights", str(env["tmp"] / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_study.main([*study_args(env), "--families", "frozen"]) == 2
    assert "leaves nothing to search" in capsys.readouterr().err
    assert run_study.main([*study_args(env), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "family  scratch CNN\n" in out
    assert out.count("no ImageNet weights here for tf_efficientnet_lite0") == 1
    # on a CPU a fine-tuned trial takes minutes: frozen backbones and patches, unless asked
    assert run_study.main([*study_args(env), "--dry-run", "--weights", str(backbone_weights),
                           "--backbones", "mobilenetv3_large_100"]) == 0
    assert ("family  scratch CNN, mobilenetv3_large_100 (ImageNet, frozen or patch by patch "
            "at 224 px)\n") in capsys.readouterr().out


def test_a_patch_study_searches_exports_and_predicts(env, backbone_weights, capsys):
    args = ["--data", env["data"], "--study", "pt", "--storage", env["url"], "--n-trials", "1",
            "--epochs", "2", "--cache-dir", env["cache"], "--no-estimate", "--no-portfolio",
            "--backbones", "mobilenetv3_large_100", "--families", "patch",
            "--weights", str(backbone_weights)]
    assert run_study.main(args) == 0
    assert "patch by patch at" in capsys.readouterr().out
    import optuna
    study = optuna.load_study(study_name="pt", storage=env["url"])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.params["backbone_mode"] == "patch" for t in done)
    out_dir = env["tmp"] / "export"
    # its ONNX graph: tests/model/test_patch.py
    assert export_best.main(["--study", "pt", "--group", "PT", "--storage", env["url"],
                             "--out", str(out_dir), "--cache-dir", env["cache"]]) == 0
    plain = torch.load(out_dir / "PT.pth", weights_only=True)
    assert "strides" in plain["arch"] and "(ImageNet) patches" in capsys.readouterr().out
    assert (out_dir / "PT.pt2").is_file()
