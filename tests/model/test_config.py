"""CNNConfig: defaults, validation messages, plain-dict round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.config import CHANNELS, TASKS, CNNConfig


def test_source_channels_match_data_package():
    # model/ may not import data/, so the order is spelled twice; keep the two in step.
    # (Skipped where the data package's own dependencies, e.g. kornia, are missing.)
    channels = pytest.importorskip("model.channels")
    assert channels.CHANNELS == CHANNELS


def test_defaults_are_valid():
    cfg = CNNConfig()
    assert cfg.depth == 4
    assert cfg.in_channels == 6
    assert cfg.n_outputs == 2
    assert set(TASKS) == {"binary", "multilabel", "multiclass"}


@pytest.mark.parametrize(("task", "n"), [("binary", 1), ("multilabel", 2), ("multiclass", 4)])
def test_n_outputs(task, n):
    assert CNNConfig(task=task).n_outputs == n


def test_round_trip_through_json():
    cfg = CNNConfig(
        channels=("GRAY", "W", "NORMAL"),
        input_size=96,
        widths=(16, 32, 64),
        kernel_sizes=(5, 3, 7),
        convs_per_block=3,
        activation="mish",
        pool="avg",
        spatial_dropout=0.1,
        head_pool="flatten",
        dense_width=0,
        dense_dropout=0.0,
        task="multiclass",
    )
    d = cfg.to_dict()
    assert isinstance(d["widths"], list)
    again = CNNConfig.from_dict(json.loads(json.dumps(d)))
    assert again == cfg
    assert hash(again) == hash(cfg)


def test_lists_and_numpy_scalars_are_normalised():
    cfg = CNNConfig(widths=[8, np.int64(16)], kernel_sizes=[3, 3], input_size=np.int32(32))
    assert cfg.widths == (8, 16)
    assert type(cfg.widths[1]) is int
    assert type(cfg.input_size) is int


def test_from_dict_names_unknown_keys():
    d = CNNConfig().to_dict() | {"bogus": 1, "another": 2}
    with pytest.raises(ValueError, match=r"another.*bogus"):
        CNNConfig.from_dict(d)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_size": 8}, "feature map"),
        ({"widths": (8, 8, 8, 8, 8, 8), "kernel_sizes": (3,) * 6, "input_size": 32}, "input_size"),
        ({"widths": (8,), "kernel_sizes": (3,)}, "depth 1"),
        ({"widths": (8,) * 7, "kernel_sizes": (3,) * 7}, "depth 7"),
        ({"kernel_sizes": (3, 3, 3)}, "one kernel size per block"),
        ({"kernel_sizes": (3, 4, 3, 3)}, "kernel_sizes"),
        ({"activation": "tanh"}, "activation"),
        ({"pool": "lp"}, "pool"),
        ({"head_pool": "attention"}, "head_pool"),
        ({"channels": ("GRAY", "IR")}, "unknown channel"),
        ({"channels": ("GRAY", "GRAY")}, "duplicates"),
        ({"channels": ("NORMAL", "GRAY")}, "source order"),
        ({"channels": ()}, "empty"),
        ({"convs_per_block": 4}, "convs_per_block"),
        ({"spatial_dropout": 1.0}, "spatial_dropout"),
        ({"dense_dropout": -0.1}, "dense_dropout"),
        ({"dense_width": -1}, "dense_width"),
        ({"task": "regression"}, "task"),
        ({"widths": (8, 0, 8, 8)}, "positive"),
        ({"input_size": 64.0}, "integer"),
        ({"convs_per_block": True}, "integer"),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CNNConfig(**kwargs)


def test_swish_is_accepted():
    assert CNNConfig(activation="swish").activation == "swish"


def test_frozen():
    cfg = CNNConfig()
    with pytest.raises(AttributeError):
        cfg.input_size = 64  # type: ignore[misc]
