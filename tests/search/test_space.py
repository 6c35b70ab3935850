import optuna
import pytest
from optuna.trial import FixedTrial

from data import AugmentConfig
from model import build_model, complexity
from model.config import BackboneConfig, PatchConfig
from search.space import SearchSpace, max_depth_for, suggest_config, trial_config, widths_for


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


def test_pretrained_backbones_are_searched_beside_the_scratch_cnn():
    space = SearchSpace(backbones=("tf_efficientnet_lite0", "resnet18"), epochs=40,
                        finetune_epochs=12)
    assert space.families == ("scratch", "tf_efficientnet_lite0", "resnet18")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3),
                                direction="maximize")
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = suggest_config(trial, space)
        assert suggest_config(FixedTrial(trial.params), space) == config  # exact replay
        if isinstance(config.model, PatchConfig):
            seen.add("patch")
            assert config.model.input_size in space.patch_sizes
            assert config.model.task in ("binary", "multilabel")
            assert config.train.backbone_lr_scale == 0 and config.train.epochs == 40
        elif isinstance(config.model, BackboneConfig):
            mode = trial.params["backbone_mode"]
            seen.add(mode)
            assert config.model.input_size in space.backbone_sizes
            assert "depth" not in trial.params and "input_size" not in trial.params
            if mode == "frozen":  # features computed once: flips are all it can augment
                assert config.train.backbone_lr_scale == 0 and config.train.epochs == 40
                assert "aug_geometric" not in trial.params
                assert config.augment == AugmentConfig.from_strength(
                    0, 0, flips=trial.params["flips"])
            else:
                assert 0.01 <= config.train.backbone_lr_scale <= 0.3
                assert config.train.epochs == 12
        else:
            seen.add("scratch")
        study.tell(trial, 0.0)
    assert seen == {"scratch", "frozen", "finetune", "patch"}


def test_backbones_alone_and_old_trials_replay():
    alone = SearchSpace(backbones=("resnet18",), scratch=False, backbone_modes=("frozen",))
    config = suggest_config(optuna.create_study().ask(), alone)
    assert config.model.backbone == "resnet18" and config.train.backbone_lr_scale == 0
    with pytest.raises(ValueError, match="needs pretrained backbones"):
        SearchSpace(scratch=False)
    with pytest.raises(ValueError, match="unknown backbone"):
        SearchSpace(backbones=("vgg11",))
    # a trial recorded before backbones existed replays as the scratch CNN it was
    old = optuna.create_study().ask()
    before = suggest_config(old, SearchSpace())
    frozen = optuna.trial.create_trial(params=old.params, distributions=old.distributions,
                                       value=0.5)
    assert trial_config(frozen, SearchSpace(backbones=("resnet18",))) == before
