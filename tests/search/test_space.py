import optuna
import pytest
from optuna.trial import FixedTrial

from model import build_model, complexity
from search.space import SearchSpace, max_depth_for, suggest_config, widths_for


def test_fixed_trial_replays_a_sampled_trial_exactly():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1),
                                direction="maximize")
    for _ in range(10):
        trial = study.ask()
        config = suggest_config(trial)
        assert suggest_config(FixedTrial(trial.params)) == config
        study.tell(trial, 0.0)


@pytest.mark.parametrize("seed", range(3))
def test_every_sampled_config_builds(seed):
    space = SearchSpace(sizes=(32, 64), depth=(2, 6))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(15):
        trial = study.ask()
        config = suggest_config(trial, space)
        assert config.model.input_size // 2 ** len(config.model.widths) >= 2
        build_model(config.model)
        assert complexity(config.model)["params"] > 0
        # loss weighting and balanced sampling never together
        t = config.train
        assert not (t.sampling == "balanced" and (t.pos_weight_factor or t.class_weight_power))
        study.tell(trial, 0.0)


def test_space_bounds_reach_the_config():
    space = SearchSpace(sizes=(48,), epochs=7, patience=2, metric="defect_ap", tasks=("binary",),
                        min_recall=0.9, threshold="min_recall")
    config = suggest_config(optuna.create_study().ask(), space)
    assert config.model.input_size == 48 and config.model.task == "binary"
    assert config.train.epochs == 7 and config.train.early_stop_patience == 2
    assert config.train.metric == "defect_ap" and config.train.min_recall == 0.9


def test_noise_aware_space_tunes_the_flagged_weight():
    trial = optuna.create_study().ask()
    suggest_config(trial, SearchSpace(noise_aware=True))
    assert "flagged_weight" in trial.params


def test_helpers_and_round_trip():
    assert widths_for(16, 2.0, 4) == (16, 32, 64, 128)
    assert widths_for(24, 1.5, 3) == (24, 40, 56)
    assert max_depth_for(32) == 4 and max_depth_for(128) == 6
    space = SearchSpace(sizes=(32, 64))
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="channel set"):
        SearchSpace(channel_sets=("rgb",))


def test_the_space_s_choices_bound_every_trial():
    space = SearchSpace(sizes=(32,), depth=(2, 3), base_widths=(8,), batch_sizes=(16,),
                        optimizers=("adamw",), lr=(1e-3, 2e-3), kernels_first=(3,),
                        kernels_rest=(3,), dense_widths=(0,), tasks=("multilabel",))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(8):
        config = suggest_config(study.ask(), space)
        assert config.train.optimizer == "adamw" and 1e-3 <= config.train.lr <= 2e-3
        assert set(config.model.kernel_sizes) == {3} and config.model.dense_width == 0
