"""Run configurations (training.config): TrainConfig checks, RunConfig and run files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from data import AugmentConfig
from model import CNNConfig, ThresholdPolicy
from training.config import (
    RunConfig,
    RunFileError,
    TrainConfig,
    load_config,
    save_config,
)

TINY = CNNConfig(input_size=32, widths=(16, 32, 64), kernel_sizes=(3, 3, 3), convs_per_block=1,
                 dense_width=32)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1}, "BatchNorm"), ({"optimizer": "adam"}, "sgd"),
    ({"lr": 0.0}, "lr"), ({"schedule": "step"}, "onecycle"), ({"sampling": "up"}, "balanced"),
    ({"metric": "accuracy"}, "graded_ap"), ({"flagged_weight": 1.5}, "flagged_weight")])
def test_train_config_names_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_threshold_policy_is_validated_and_exposed():
    assert TrainConfig().policy == ThresholdPolicy()
    tc = TrainConfig(threshold="min_recall", min_recall=0.9)
    assert tc.policy == ThresholdPolicy("min_recall", 0.9)
    with pytest.raises(ValueError):
        TrainConfig(threshold="min_recall")  # a recall target is needed


def test_balanced_sampling_and_weighting_are_exclusive():
    with pytest.raises(ValueError, match="exclusive"):
        TrainConfig(sampling="balanced", pos_weight_factor=1.0)
    TrainConfig(sampling="balanced", pos_weight_factor=0.0, class_weight_power=0.0)


def test_run_config_json_round_trip(tmp_path):
    cfg = RunConfig(TINY, TrainConfig(epochs=3, loss="focal"), AugmentConfig.from_strength(1, 0))
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown train key"):
        RunConfig.from_dict({"train": {"epochz": 3}})


def test_run_files_round_trip_with_overrides_and_name_themselves_when_bad(tmp_path):
    cfg = RunConfig(TINY, TrainConfig(epochs=3, loss="focal"), AugmentConfig.from_strength(1, 0))
    path = save_config(cfg, tmp_path / "run.json")
    assert load_config(path) == cfg
    assert load_config(path, epochs=7, seed=3).train == replace(cfg.train, epochs=7, seed=3)
    for text, why in (("{", "cannot read"), ("[]", "not a valid"),
                      ('{"augment": {"flipz": 1}}', "unknown augment key")):
        path.write_text(text)
        with pytest.raises(RunFileError, match=why) as exc:
            load_config(path, epochs=2)
        assert "run.json" in str(exc.value)
    with pytest.raises(RunFileError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_run_config_from_dict_keeps_defaults_and_refuses_strange_shapes():
    assert RunConfig.from_dict({}) == RunConfig()
    partial = RunConfig.from_dict({"train": {"epochs": 4}})
    assert partial.train == replace(TrainConfig(), epochs=4) and partial.model == CNNConfig()
    for bad, match in (([], "JSON object"), ({"train": 3}, "JSON object"),
                       ({"optimiser": {}}, "unknown section")):
        with pytest.raises(ValueError, match=match):
            RunConfig.from_dict(bad)
