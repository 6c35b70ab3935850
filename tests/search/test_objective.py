import dataclasses

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FixedTrial, TrialState

import model as model_lib
from data import make_split
from search.objective import Objective, TrialFailed
from search.space import SearchSpace, suggest_config, trial_config
from search.study import create_or_resume, make_pruner, make_sampler, open_storage, run_trials

SPACE = SearchSpace(sizes=(32,), depth=(2, 3), base_widths=(8,), batch_sizes=(16,), epochs=2,
                    patience=0)


@pytest.fixture
def setup(tmp_path, synthetic_set):
    split = make_split(synthetic_set.ids, synthetic_set.codes, k=4, seed=0)
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    (tmp_path / "artifacts").mkdir()
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))

    def study(pruner="none", name="s"):
        s, _ = create_or_resume(name, storage, sampler=make_sampler("random", 0),
                                pruner=pruner if not isinstance(pruner, str)
                                else make_pruner(pruner, SPACE.epochs),
                                attrs={"data_hash": "d", "split_hash": split.hash})
        return s

    objective = Objective(synthetic_set, split, SPACE, artifact_store=store)
    return study, objective, store, tmp_path


def test_trials_record_metrics_and_weights(setup):
    make_study, objective, store, tmp_path = setup
    study = make_study()
    run_trials(study, objective, n_trials=2, catch=(TrialFailed,))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    t = study.best_trial
    for key in ("graded_ap", "defect_ap", "defect_f1", "print_error_ap", "threshold_defect",
                "best_epoch", "epochs_run", "params", "seconds", "architecture"):
        assert key in t.user_attrs, key
    assert "config" not in t.user_attrs  # replayed, not stored (see trial_config)
    assert t.value == pytest.approx(t.user_attrs["graded_ap"], rel=1e-3)  # 4 significant digits
    assert "graded_precision" not in t.user_attrs and "defect_recall" not in t.user_attrs
    assert sorted(t.intermediate_values) == [1, 2]
    path = tmp_path / "best.pth"
    download_artifact(artifact_store=store, artifact_id=t.user_attrs["checkpoint_artifact"],
                      file_path=str(path))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["trial"] == t.number and ckpt["params"] == t.params
    assert model_lib.load(path).cfg == suggest_config(FixedTrial(t.params), SPACE).model


def test_data_is_loaded_once_per_size(setup):
    make_study, objective, *_ = setup
    run_trials(make_study(), objective, n_trials=2, catch=(TrialFailed,))
    first = objective.train_data(32)
    assert objective.train_data(32) is first and list(objective._train_data) == [32]


def test_a_pruner_prunes(setup):
    make_study, objective, *_ = setup
    # no score can reach 2.0: every trial is pruned at its first report
    study = make_study(optuna.pruners.ThresholdPruner(lower=2.0))
    run_trials(study, objective, n_trials=2, catch=(TrialFailed,))
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert study.trials[0].user_attrs["stop_reason"].startswith("pruned at epoch 1")


def test_out_of_memory_fails_the_trial_and_the_study_goes_on(setup, monkeypatch):
    make_study, objective, *_ = setup
    import search.objective as objective_module

    real_train = objective_module.train
    calls = []

    def flaky_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train", flaky_train)
    study = make_study()
    run_trials(study, objective, n_trials=1, catch=(TrialFailed,))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "out of memory" in study.trials[0].user_attrs["fail_reason"]


def test_trial_config_replays_exactly_what_each_trial_trained(setup):
    make_study, objective, *_ = setup
    trained = {}
    objective.on_result.append(lambda trial, result: trained.update({trial.number: result}))
    study = make_study()
    run_trials(study, objective, n_trials=2, catch=(TrialFailed,))
    space = SPACE.to_dict()  # as the study stores it
    for t in study.trials:
        assert trial_config(t, space) == trained[t.number].config
    # a study recorded before the replay kept the configuration as a user attribute
    legacy = optuna.trial.create_trial(params={}, distributions={}, value=0.5,
                                       user_attrs={"config": trained[0].config.to_dict()})
    assert trial_config(legacy, space) == trained[0].config
    # parameters that do not fit the space say so instead of training something else
    broken = optuna.trial.create_trial(params={"input_size": 32}, value=0.5,
                                       distributions={"input_size": optuna.distributions
                                                      .CategoricalDistribution([32])})
    with pytest.raises(ValueError, match="do not replay"):
        trial_config(broken, space)


def test_a_trial_cut_by_the_deadline_is_partial_not_ranked_as_complete(setup):
    make_study, objective, *_ = setup
    objective.deadline = 0.0  # long past: every trial stops after its first epoch
    study = make_study()
    run_trials(study, objective, n_trials=1, catch=(TrialFailed,))
    t = study.trials[0]
    # PRUNED at its last epoch: samplers rank it below every finished trial
    assert t.state == TrialState.PRUNED and t.user_attrs["epochs_run"] == 1
    assert t.user_attrs["partial"] == "cut by the study's budget after 1 of 2 epochs"
    assert "budget ran out at epoch 1" in t.user_attrs["stop_reason"]
    assert t.value == pytest.approx(t.intermediate_values[1])
    assert "checkpoint_artifact" in t.user_attrs  # its weights stay for export


def test_a_trial_that_ran_all_its_epochs_when_the_deadline_passed_is_complete(setup):
    make_study, objective, *_ = setup
    objective.space = dataclasses.replace(SPACE, epochs=1)
    objective.deadline = 0.0
    study = make_study()
    run_trials(study, objective, n_trials=1, catch=(TrialFailed,))
    assert study.trials[0].state == TrialState.COMPLETE
    assert "partial" not in study.trials[0].user_attrs


def test_the_pruner_sees_the_best_score_so_far(setup):
    make_study, objective, *_ = setup
    study = make_study()
    run_trials(study, objective, n_trials=2, catch=(TrialFailed,))
    for t in study.trials:
        values = [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        assert values == sorted(values)  # never falls: a bad epoch is not held against it


def test_a_pruned_trial_tells_the_stop_hooks_why_and_how_far_it_got(setup):
    make_study, objective, *_ = setup
    calls = []
    objective.on_stop = [lambda trial, why, rows: calls.append((why, len(rows)))]
    study = make_study(pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # prunes at once
    run_trials(study, objective, n_trials=1, catch=(TrialFailed,))
    assert study.trials[0].state == TrialState.PRUNED
    assert calls == [(study.trials[0].user_attrs["stop_reason"], 1)]
