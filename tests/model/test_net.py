"""build_model, complexity and describe over a spread of configs (small inputs, fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.config import CNNConfig
from model.net import build_model, complexity, describe

CONFIGS = {
    "d2-relu-avg-max-binary": CNNConfig(
        channels=("GRAY", "NORMAL"),
        input_size=32,
        widths=(8, 16),
        kernel_sizes=(3, 5),
        convs_per_block=1,
        task="binary",
    ),
    "d3-silu-max-flatten-multiclass": CNNConfig(
        input_size=40,
        widths=(8, 8, 16),
        kernel_sizes=(7, 3, 3),
        activation="silu",
        head_pool="flatten",
        spatial_dropout=0.1,
        task="multiclass",
    ),
    "d4-gelu-avgpool-maxhead-multilabel": CNNConfig(
        input_size=48,
        widths=(4, 8, 8, 16),
        kernel_sizes=(3, 3, 5, 3),
        activation="gelu",
        pool="avg",
        head_pool="max",
        dense_width=0,
        task="multilabel",
    ),
    "d5-leaky-flatten-binary": CNNConfig(
        channels=("AM", "G", "R"),
        input_size=64,
        widths=(4, 4, 8, 8, 8),
        kernel_sizes=(3,) * 5,
        convs_per_block=3,
        activation="leaky_relu",
        head_pool="flatten",
        dense_width=16,
        task="binary",
    ),
    "d6-mish-avg-multiclass": CNNConfig(
        input_size=64,
        widths=(4, 4, 4, 8, 8, 8),
        kernel_sizes=(3,) * 6,
        activation="mish",
        pool="avg",
        spatial_dropout=0.2,
        dense_width=8,
        dense_dropout=0.0,
        task="multiclass",
    ),
    "d3-split-stem-multilabel": CNNConfig(
        input_size=32,
        widths=(9, 16, 16),  # odd: the ink half gets the extra channel
        kernel_sizes=(5, 3, 3),
        convs_per_block=2,
        stem="split",
        task="multilabel",
    ),
    "d2-split-stem-gray-normal-binary": CNNConfig(
        channels=("GRAY", "NORMAL"),
        input_size=24,
        widths=(8, 8),
        kernel_sizes=(3, 3),
        convs_per_block=1,
        stem="split",
        task="binary",
    ),
    "d2-swish-maxhead-multilabel": CNNConfig(
        input_size=33,  # odd size: floor pooling must be accounted for everywhere
        widths=(8, 16),
        kernel_sizes=(5, 7),
        activation="swish",
        head_pool="max",
        task="multilabel",
    ),
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def cfg(request) -> CNNConfig:
    return CONFIGS[request.param]


def _batch(cfg: CNNConfig, b: int = 4) -> torch.Tensor:
    return torch.randn(b, cfg.in_channels, cfg.input_size, cfg.input_size)


def test_forward_shape_and_finite(cfg):
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    with torch.no_grad():
        out = net(_batch(cfg))
    assert out.shape == (4, cfg.n_outputs)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient(cfg):
    torch.manual_seed(0)
    net = build_model(cfg).train()
    out = net(_batch(cfg))
    out.float().pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_one_batchnorm_per_conv(cfg):
    net = build_model(cfg)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    paths = cfg.depth + (cfg.stem == "split")  # a split stem's first block is two
    assert n_conv == n_bn == paths * cfg.convs_per_block
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_readable_names(cfg):
    names = dict(build_model(cfg).named_modules())
    first = ["features.block0.ink.", "features.block0.relief."] if cfg.stem == "split" else [
        "features.block0."]
    for prefix in first:
        assert isinstance(names[f"{prefix}conv0"], nn.Conv2d)
        assert isinstance(names[f"{prefix}bn0"], nn.BatchNorm2d)
    assert isinstance(names[f"features.block{cfg.depth - 1}.pool"], nn.MaxPool2d | nn.AvgPool2d)
    assert isinstance(names["head.out"], nn.Linear)


def test_complexity_params_match_module(cfg):
    net = build_model(cfg)
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert complexity(cfg)["params"] == n


def _macs_by_hooks(cfg: CNNConfig) -> int:
    net = build_model(cfg).eval()
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * module.in_channels * kh * kw // module.groups
        else:
            total += module.in_features * module.out_features

    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(_batch(cfg, 1))
    return total


def test_complexity_macs_match_forward_hooks(cfg):
    assert complexity(cfg)["macs"] == _macs_by_hooks(cfg)


def test_complexity_by_hand():
    cfg = CNNConfig(
        channels=("GRAY",),
        input_size=8,
        widths=(2, 4),
        kernel_sizes=(3, 3),
        convs_per_block=1,
        head_pool="flatten",
        dense_width=3,
        task="binary",
    )
    # block0: 8x8 out, 2 filters of 1x3x3 -> 8*8*2*9 = 1152; pool -> 4x4
    # block1: 4x4 out, 4 filters of 2x3x3 -> 4*4*4*18 = 1152; pool -> 2x2
    # flatten 4*2*2 = 16 -> fc 16*3 = 48 -> out 3*1 = 3
    assert complexity(cfg)["macs"] == 1152 + 1152 + 48 + 3
    # conv weights 18 + 72, BN 2*2 + 2*4, fc 48 + 3, out 3 + 1
    assert complexity(cfg)["params"] == 18 + 72 + 4 + 8 + 51 + 4


def test_describe():
    text = describe(CNNConfig())
    assert text.startswith("4x[2 conv 3-3-3-3] 32-64-128-256 relu max-pool, avg head 128")
    assert "multilabel" in text
    assert "\n" not in describe(CONFIGS["d3-silu-max-flatten-multiclass"])


def test_build_is_pure_and_seeded():
    cfg = CONFIGS["d2-relu-avg-max-binary"]
    torch.manual_seed(1)
    a = build_model(cfg).state_dict()
    torch.manual_seed(1)
    b = build_model(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_split_stem_keeps_relief_apart_from_ink():
    cfg = CONFIGS["d3-split-stem-multilabel"]
    net = build_model(cfg).eval()
    stem = net.features.block0
    assert stem.ink[0].in_channels == 5 and stem.relief[0].in_channels == 1
    assert (stem.ink[0].out_channels, stem.relief[0].out_channels) == (5, 4) == cfg.stem_widths
    x = _batch(cfg, 2)
    moved = x.clone()
    moved[:, 5] += 1.0  # NORMAL only: reaches the network through the relief path alone
    with torch.no_grad():
        ink_a, ink_b = stem.ink(x[:, :5]), stem.ink(moved[:, :5])
        assert torch.equal(ink_a, ink_b) and not torch.equal(net(x), net(moved))
    assert "split stem" in describe(cfg)
    assert not any("index" in k for k in net.state_dict())  # rebuilt from the config


def test_a_split_stem_needs_normal_and_another_channel():
    with pytest.raises(ValueError, match="split"):
        CNNConfig(channels=("GRAY", "G"), stem="split")
    with pytest.raises(ValueError, match="split"):
        CNNConfig(channels=("NORMAL",), stem="split")
    with pytest.raises(ValueError, match="stem"):
        CNNConfig(stem="double")

