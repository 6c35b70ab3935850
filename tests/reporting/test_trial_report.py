"""Per-trial notes and figures for optuna-dashboard (reporting.trial_report), without a study."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from data import make_split
from model import CNNConfig
from reporting.trial_report import (
    FIGURES,
    TrialReport,
    note_of,
    render_figures,
    study_note,
    trial_note,
    worst_errors,
    write_study_note,
)
from search.space import SearchSpace
from training.config import RunConfig, TrainConfig

CONFIG = RunConfig(CNNConfig(input_size=32, widths=(8, 16), kernel_sizes=(3, 3),
                             convs_per_block=1, dense_width=0),
                   TrainConfig(epochs=2, batch_size=16, lr=3e-3))


def _result(ids, n_val=12, seed=0):
    """What render_figures and trial_note read of a TrainResult, with crafted values."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n_val, 2))
    probs = rng.uniform(size=(n_val, 4))
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_ap": 0.4,
                "val_graded_ap": 0.5,
                "val_defect_ap": 0.6, "lr": 1e-3} for e in (1, 2)]
    return SimpleNamespace(
        metrics={"graded_ap": 0.61, "defect_ap": 0.7, "defect_f1": 0.66},
        thresholds=dict.fromkeys(("print_error", "physical_error", "no_defect", "defect"), 0.5),
        score=0.61, params=12345, macs=3.4e6, best_epoch=2, epochs_run=2, seconds=4.2,
        stop_reason="completed 2 epochs", config=CONFIG, val_ids=list(ids[:n_val]),
        val_targets=targets, val_probs=probs, history=history)


def test_worst_errors_are_the_most_confident_mistakes():
    y = np.array([1, 1, 1, 0, 0, 0, 1])
    s = np.array([0.1, 0.4, 0.9, 0.8, 0.2, 0.95, 0.05])
    fn, fp = worst_errors(y, s, threshold=0.5, n=2)
    assert fn.tolist() == [6, 0]  # labelled defective, lowest probability first
    assert fp.tolist() == [5, 3]  # labelled good, highest probability first
    fn, fp = worst_errors(y, s, threshold=0.0, n=3)
    assert fn.tolist() == [] and fp.tolist() == [5, 3, 4]


def test_the_note_says_n_a_for_undefined_metrics():
    config = CONFIG
    result = SimpleNamespace(  # what trial_note reads of a TrainResult
        metrics={"graded_ap": 0.5, "defect_ap": 0.7, "print_error_ap": float("nan")},
        thresholds={"defect": 0.4}, score=0.5, params=1000, macs=2e6, best_epoch=1,
        epochs_run=2, seconds=3.0, stop_reason="completed 2 epochs", config=config)
    note = trial_note(7, result)
    assert note.startswith("## Trial 7: graded_ap 0.5000")
    assert "| print error | n/a |" in note and "| defect (any) | 0.700 |" in note


def test_the_note_names_the_run_and_its_operating_point():
    cfg = RunConfig(CONFIG.model, TrainConfig(threshold="min_recall", min_recall=0.9))
    note = trial_note(3, SimpleNamespace(**{**vars(_result([f"E{i}" for i in range(12)])),
                                            "config": cfg}))
    assert "**12,345 parameters**, 3.4 M MACs per eraser" in note
    assert "(recall >= 0.9)" in note and "Best epoch **2** of 2, 4 s" in note
    assert "| defect (any) | 0.700 | n/a | 0.660 |" in note  # AP, AUROC (not given), F1


def test_a_proven_starting_point_says_so_in_its_note():
    note = trial_note(0, SimpleNamespace(**{**vars(_result(["E1", "E2"])), "config": CONFIG}),
                      portfolio="gn64-3x16", found="learned both kinds")
    assert "**Proven starting point `gn64-3x16`**" in note and "learned both kinds" in note


def test_study_note_has_the_data_but_no_paths(synthetic_set):
    split = make_split(synthetic_set.ids, synthetic_set.codes, k=4, seed=0)
    space = SearchSpace(sizes=(32,), epochs=3)
    note = study_note("demo", synthetic_set, split, space)
    assert note.startswith("## Study demo")
    assert f"**{len(synthetic_set)} erasers**" in note and split.hash in note
    assert f"{len(split.val_ids())} validation erasers" in note and "up to 3 epochs" in note
    assert str(synthetic_set.source) not in note  # only the last two parts of the path
    study = optuna.create_study(study_name="demo")
    assert write_study_note(study, synthetic_set, split, space)
    assert not write_study_note(study, synthetic_set, split, space)  # keeps the first note
    assert note_of(study) == note


def test_note_of_a_frozen_trial_needs_its_study():
    study = optuna.create_study()
    study.optimize(lambda t: 1.0, n_trials=1)
    with pytest.raises(ValueError, match="needs its study"):
        note_of(study.trials[0])


def test_figures_are_drawn_for_a_crafted_result(synthetic_set, tmp_path):
    result = _result(synthetic_set.ids)
    drawn = render_figures(result, synthetic_set, tmp_path, n_errors=2, image_size=32)
    assert [p.name for p in drawn] == list(FIGURES)
    assert all(p.stat().st_size > 0 for p in drawn)


def test_the_hook_writes_only_the_note_without_an_artifact_store(synthetic_set):
    study = optuna.create_study()
    trial = study.ask()
    TrialReport(synthetic_set, None)(trial, _result(synthetic_set.ids))
    assert note_of(trial).startswith(f"## Trial {trial.number}: graded_ap 0.6100")


def test_a_stopped_trial_s_note_says_why_and_shows_its_curve():
    from reporting.trial_report import stopped_note

    note = stopped_note(4, "pruned at epoch 10: best graded_ap 0.3900",
                        [{"val_graded_ap": 0.31, "train_loss": 0.9},
                         {"val_graded_ap": 0.39, "train_loss": 0.7}],
                        [("curves", "/artifacts/1/2/abc")])
    assert "**pruned at epoch 10" in note and "![curves](/artifacts/1/2/abc)" in note
    assert "2 epoch(s) trained" in note and "0.390" in note


def test_study_charts_show_the_top_parameters_and_are_overwritten():
    import optuna
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    from reporting.trial_report import STUDY_CHARTS, refresh_study_charts

    def objective(trial):
        return sum(trial.suggest_float(f"p{i}", 0, 1) * (i + 1) for i in range(12))

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2)
    assert not refresh_study_charts(study)  # 2 completed: not a multiple of the interval
    study.optimize(objective, n_trials=4)
    assert refresh_study_charts(study) and refresh_study_charts(study, force=True)
    graphs = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert sorted(graphs) == sorted(STUDY_CHARTS)  # two charts, overwritten, not piled up
    importance = json.loads(graphs["top_importances"])
    assert "8 most important" in importance["layout"]["title"]["text"]
    assert len(importance["data"][0]["y"]) == 8  # the top 8 of 12 parameters, no more
