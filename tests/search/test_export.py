"""Shipping a trial: operating-point policy, TTA finding, ONNX, refit, model card, CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch

import export_best
import model
import predict
import run_study
from data.synth import generate
from model import GRADED, PROB_NAMES, OnnxCheck, ThresholdPolicy, targets_to_truth
from search.export import apply_policy, fetch_checkpoint
from search.study import artifact_dir_for

GROUP = "team_x"


def noisy_predictions(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Targets and overlapping (imperfect) probabilities in PROB_NAMES order."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n, 2))
    truth = targets_to_truth(targets).astype(float)
    probs = np.clip(0.35 * truth + rng.uniform(0, 0.65, size=truth.shape), 0, 1)
    return probs, targets


@pytest.mark.parametrize("recall", [0.5, 0.9, 1.0])
def test_min_recall_policy_meets_the_recall_on_validation(recall):
    probs, targets = noisy_predictions()
    ckpt = {"thresholds": dict.fromkeys(PROB_NAMES, 0.5), "val_metrics": {}}
    out = apply_policy(ckpt, probs, targets, ThresholdPolicy("min_recall", recall))
    assert out["threshold_policy"] == {"kind": "min_recall", "min_recall": recall}
    truth = targets_to_truth(targets)
    for i, name in enumerate(PROB_NAMES):
        predicted = probs[:, i] >= out["thresholds"][name]
        measured = predicted[truth[:, i] == 1].mean()
        assert measured >= recall
        assert out["val_metrics"][f"{name}_recall"] == pytest.approx(measured)
    assert ckpt["thresholds"]["defect"] == 0.5  # the input is not modified


# -- end to end, through the commands ---------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 2-trial study on 48 px synthetic erasers."""
    tmp = tmp_path_factory.mktemp("ship")
    generate(tmp / "data", n=48, seed=4, size=48, defect_rate=0.5, workers=1)
    env = {"data": str(tmp / "data"), "url": f"sqlite:///{tmp / 'studies.db'}",
           "cache": str(tmp / "cache"), "tmp": tmp}
    # rung xs: the narrowest networks of the space keep this fast
    assert run_study.main(["--data", env["data"], "--study", "ship", "--storage", env["url"],
                           "--n-trials", "2", "--epochs", "2", "--sizes", "32", "--rung", "xs",
                           "--pruner", "none", "--cache-dir", env["cache"],
                           "--no-estimate"]) == 0
    return env


def export_args(env, out: Path, *extra: str) -> list[str]:
    return ["--study", "ship", "--group", GROUP, "--storage", env["url"], "--out", str(out),
            "--cache-dir", env["cache"], *extra]


def test_export_onnx_min_recall_and_card(study, tmp_path, capsys):
    out = tmp_path / "exports"
    assert export_best.main(export_args(study, out, "--onnx", "--min-recall", "0.9")) == 0
    printed = capsys.readouterr().out
    assert "onnx    10 validation erasers" in printed and "tta     " in printed
    pth, onnx_file, card = (out / f"{GROUP}{s}" for s in (".pth", ".onnx", ".md"))
    assert pth.is_file() and onnx_file.is_file() and card.is_file()
    caveat = card.read_text()
    assert "optimistic for new erasers" in caveat and f"predict.py {GROUP}.pth HELD_OUT/" in caveat
    assert not list(out.glob(".*"))  # nothing staged is left over

    ckpt = torch.load(pth, weights_only=True)
    assert ckpt["threshold_policy"] == {"kind": "min_recall", "min_recall": 0.9}
    val = ckpt["val_metrics"]
    for name in (*GRADED, "defect"):
        assert np.isnan(val[f"{name}_recall"]) or val[f"{name}_recall"] >= 0.9
        assert val[f"threshold_{name}"] == ckpt["thresholds"][name]
    tta = ckpt["tta"]
    assert {"graded_ap", "graded_ap_tta", "defect_ap_tta", "recommended"} <= set(tta)
    assert set(tta["thresholds"]) == set(PROB_NAMES)

    # The ONNX file alone, fed the delivered arrays, gives the .pth model's probabilities.
    images = np.stack([np.load(p) for p in sorted((Path(study["data"]) / "arrays").glob(
        "*.npy"))[:3]])
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    class_probs, defect = session.run(None, {"images": images})
    expected = model.predict(model.load(pth), images)
    np.testing.assert_allclose(class_probs, expected[:, :3], atol=1e-4)
    np.testing.assert_allclose(defect, expected[:, 3], atol=1e-4)

    text = card.read_text()
    for needle in (ckpt["data_hash"], ckpt["split_hash"], "| `lr` |", "mean (graded)",
                   "`min_recall`", "Test-time augmentation", "torch.load(", "InferenceSession(",
                   "model.load(", "onnxruntime "):
        assert needle in text, needle

    # predict.py reports the stored operating point (and the TTA thresholds with --tta).
    preds = tmp_path / "preds.csv"
    assert predict.main([str(pth), study["data"], "--out", str(preds), "--tta",
                         "--cache-dir", study["cache"]]) == 0
    printed = capsys.readouterr().out
    assert "from validation, TTA; best precision at recall >= 0.9" in printed
    assert f"threshold {tta['thresholds']['defect']:.3f}" in printed


def test_retrain_full_writes_a_model_that_loads(study, tmp_path, capsys):
    out = tmp_path / "exports"
    assert export_best.main(export_args(study, out, "--retrain-full", "--device", "cpu",
                                        "--no-pt2")) == 0
    assert "refit   trial" in capsys.readouterr().out
    trial = optuna.load_study(study_name="ship", storage=study["url"]).best_trial
    trial_ckpt = fetch_checkpoint(trial, artifact_dir_for(study["url"]))
    net = model.load(out / f"{GROUP}.pth")
    refit = net.meta["retrained"]
    assert refit["on"] == "train+validation" and refit["n_erasers"] == 48
    assert refit["epochs"] == trial.user_attrs["best_epoch"] == net.meta["best_epoch"]
    assert net.meta["trial"] == trial.number
    # no validation set left: the trial's validated thresholds are kept, and the card says so
    assert net.thresholds == trial_ckpt["thresholds"]
    assert net.meta["val_metrics"] == pytest.approx(trial_ckpt["val_metrics"], nan_ok=True)
    assert not all(torch.equal(a, trial_ckpt["state_dict"][k])
                   for k, a in net.net.state_dict().items())  # new weights
    assert "Retrained on train + validation" in (out / f"{GROUP}.md").read_text()
    probs = model.predict(net, np.zeros((2, 48, 48, 6), np.uint8))
    assert probs.shape == (2, 4) and np.isfinite(probs).all()


def test_failed_onnx_check_writes_nothing(study, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exports"

    def fake_export(net, path):
        Path(path).write_bytes(b"not really onnx")
        return Path(path)

    monkeypatch.setattr(model, "export_onnx", fake_export)
    monkeypatch.setattr(model, "onnx_session", lambda path: None)
    monkeypatch.setattr(model, "compare_onnx", lambda *a, **k: OnnxCheck("random", 4, 48, 0.3))
    assert export_best.main(export_args(study, out, "--onnx", "--no-verify")) == 2
    assert "differs from PyTorch by 0.3" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("extra", [["--min-recall", "1.5"], ["--no-verify", "--min-recall", "0.9"],
                                   ["--no-verify", "--retrain-full"]])
def test_bad_flags_exit_2(study, tmp_path, extra, capsys):
    assert export_best.main(export_args(study, tmp_path / "x", *extra)) == 2
    assert extra[-2 if extra[-1][0].isdigit() else -1] in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_confirm_re_runs_the_top_trials_with_other_seeds_and_ships_the_best_mean(
        study, tmp_path, capsys):
    out = tmp_path / "exports"
    assert export_best.main(export_args(study, out, "--confirm", "2", "--confirm-seeds",
                                        "1", "--no-pt2")) == 0
    text = capsys.readouterr().out
    assert text.count(", seed ") == 2 and text.count(": mean ") == 2  # 2 re-runs, 2 ranked
    assert "exporting trial" in text and (out / f"{GROUP}.pth").is_file()
    chosen = int(text.split("exporting trial ")[1].split()[0])
    assert model.load(out / f"{GROUP}.pth").meta["trial"] == chosen
    assert export_best.main(export_args(study, tmp_path / "x", "--confirm", "2",
                                        "--trial", "0")) == 2



def test_a_partial_trial_is_exported_when_it_is_the_best_and_said_so():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from search.export import exportable, select_trial

    study = optuna.create_study(direction="maximize")
    dist = {"lr": FloatDistribution(1e-4, 1e-1)}
    for state, value, attrs in ((TrialState.COMPLETE, 0.6, {}),
                                (TrialState.PRUNED, 0.9, {}),  # pruned: never shipped
                                (TrialState.PRUNED, 0.7, {"partial": "cut by the budget"})):
        study.add_trial(create_trial(state=state, value=value, params={"lr": 0.01},
                                     distributions=dist, user_attrs=attrs,
                                     intermediate_values={1: value}))
    assert [exportable(t) for t in study.trials] == [True, False, True]
    assert select_trial(study).number == 2
    assert select_trial(study, 0).number == 0
    with pytest.raises(Exception, match="cannot be exported"):
        select_trial(study, 1)


def test_an_ensemble_ships_as_one_file_that_loads_predicts_and_exports(
        study, tmp_path, monkeypatch, capsys):
    """Whether a blend beats the single best is decided on the split's noise (tested in
    test_ensemble.py); here the decision is forced so the shipping path always runs."""
    import search.export as export
    from search.ensemble import blend, choose_ensemble

    def both_trials(probs, targets, metric, **kw):
        real = choose_ensemble(probs, targets, metric, **kw)
        score = model.metrics.score(blend(probs, (0, 1), (0.5, 0.5)), targets, metric)
        return replace(real, members=(0, 1), weights=(0.5, 0.5), score=score, honest=score,
                       noise=-1.0)

    monkeypatch.setattr(export, "choose_ensemble", both_trials)
    out = tmp_path / "exports"
    assert export_best.main(export_args(study, out, "--onnx")) == 0
    printed = capsys.readouterr().out
    assert "ensemble 2 of the 2 best trials" in printed and "as shipped" in printed
    assert "holds   ensemble of 2: 0.50 x " in printed
    pth = out / f"{GROUP}.pth"
    ckpt = torch.load(pth, weights_only=True)
    assert ckpt["kind"] == "ensemble" and sorted(ckpt["ensemble"]["trials"]) == [0, 1]
    net = model.load(pth)
    assert isinstance(net, model.EnsembleModel) and net.meta["group"] == GROUP
    images = np.stack([np.load(p) for p in sorted((Path(study["data"]) / "arrays").glob(
        "*.npy"))[:3]])
    expected = model.predict(net, images)
    session = ort.InferenceSession(str(out / f"{GROUP}.onnx"),
                                   providers=["CPUExecutionProvider"])
    class_probs, defect = session.run(None, {"images": images})
    np.testing.assert_allclose(class_probs, expected[:, :3], atol=1e-4)
    np.testing.assert_allclose(defect, expected[:, 3], atol=1e-4)
    run = torch.export.load(str(out / f"{GROUP}.pt2")).module()
    pt2_classes, pt2_defect = run(torch.from_numpy(images))
    np.testing.assert_allclose(pt2_classes.numpy(), expected[:, :3], atol=1e-4)
    np.testing.assert_allclose(pt2_defect.numpy(), expected[:, 3], atol=1e-4)
    assert "**An ensemble of 2 trials**" in (out / f"{GROUP}.md").read_text()
    preds = tmp_path / "preds.csv"
    assert predict.main([str(pth), study["data"], "--out", str(preds),
                         "--cache-dir", study["cache"]]) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    assert len(preds.read_text().splitlines()) == 49


def test_a_study_with_one_finished_trial_exports_that_trial_alone(study, tmp_path, capsys):
    assert run_study.main(["--data", study["data"], "--study", "one", "--storage",
                           study["url"], "--n-trials", "1", "--epochs", "1", "--sizes", "32",
                           "--rung", "xs", "--pruner", "none", "--cache-dir", study["cache"],
                           "--no-estimate", "--no-portfolio"]) == 0
    out = tmp_path / "exports"
    capsys.readouterr()
    assert export_best.main(["--study", "one", "--group", GROUP, "--storage", study["url"],
                             "--out", str(out), "--cache-dir", study["cache"]]) == 0
    captured = capsys.readouterr()
    assert "ensemble" not in captured.out and captured.err == ""
    assert isinstance(model.load(out / f"{GROUP}.pth"), model.InspectionModel)
    assert (out / f"{GROUP}.pt2").is_file()


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_ensemble_size_exits_2(study, tmp_path, value, capsys):
    assert export_best.main(export_args(study, tmp_path / "x", "--ensemble", value)) == 2
    assert "--ensemble" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_every_finished_trial_keeps_its_validation_predictions(study):
    from search.export import stored_val_probs, study_data
    from training.scoring import predict_set

    s = optuna.load_study(study_name="ship", storage=study["url"])
    data, split = study_data(s, cache_dir=study["cache"])
    artifacts = artifact_dir_for(study["url"])
    for trial in s.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        stored = stored_val_probs(trial, artifacts, split.val_ids())
        net = model.model_from_checkpoint(fetch_checkpoint(trial, artifacts))
        np.testing.assert_allclose(stored, predict_set(net, data, split.val_ids()), atol=1e-5)
    assert stored_val_probs(trial, artifacts, split.val_ids()[1:]) is None  # other erasers
