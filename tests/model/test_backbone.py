"""Pretrained backbones as a network family: config, build, gradients, checkpoint, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from model.config import BACKBONE_POOLS, BACKBONES, BackboneConfig, CNNConfig, arch_from_dict
from model.onnx import compare_onnx, export_onnx, onnx_session, random_images
from tests.model.shared import THRESHOLDS

SMALL = dict(channels=("GRAY", "W", "NORMAL"), input_size=64)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_builds_runs_and_trains_every_parameter(name):
    cfg = BackboneConfig(backbone=name, head_pool="avgmax", dense_width=16, **SMALL)
    torch.manual_seed(0)
    net = model.build_model(cfg).train()
    x = torch.randn(2, 3, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the stem takes the three configured channels (timm's in_chans)
    first = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3
    cx = model.complexity(cfg)
    assert cx["params"] == sum(p.numel() for p in net.parameters()) and cx["macs"] > 1e6
    assert model.describe(cfg).startswith(f"{name} (ImageNet), avgmax head 16")


@pytest.mark.parametrize("pool", BACKBONE_POOLS)
def test_head_pools(pool):
    cfg = BackboneConfig(backbone="mobilenetv3_large_100", head_pool=pool, task="multiclass",
                         **SMALL)
    net = model.build_model(cfg).eval()
    fmap = torch.randn(2, net.backbone.num_features, 2, 2)
    assert net.head(fmap).shape == (2, 4)
    # a max head answers to one strong location; an average head to all of them
    spot = fmap.clone()
    spot[0, :, 0, 0] += 10
    moved = (net.head(spot) - net.head(fmap)).abs()[0].sum()
    assert moved > 0


def test_config_validates_and_round_trips():
    cfg = BackboneConfig(backbone="resnet18", **SMALL)
    assert arch_from_dict(cfg.to_dict()) == cfg
    assert arch_from_dict(CNNConfig().to_dict()) == CNNConfig()
    for bad, match in [({"backbone": "vgg11"}, "unknown"), ({"head_pool": "flatten"}, "unknown"),
                       ({"channels": ("NORMAL", "GRAY")}, "source order"),
                       ({"input_size": 32}, ">= 64"), ({"dense_dropout": 1.0}, r"\[0, 1\)"),
                       ({"task": "regression"}, "unknown")]:
        with pytest.raises(ValueError, match=match):
            BackboneConfig(**{**SMALL, **bad})
    with pytest.raises(ValueError, match="unknown key"):
        arch_from_dict({**cfg.to_dict(), "widths": [8, 16]})


def _exported(tmp_path, name: str) -> tuple[model.InspectionModel, dict]:
    cfg = BackboneConfig(backbone=name, head_pool="max", **SMALL)
    torch.manual_seed(1)
    net = model.build_model(cfg)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults
        net.train()(torch.randn(8, 3, 64, 64))
    net.eval()
    ckpt = model.make_checkpoint(net=net, cfg=cfg, mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.1],
                                 thresholds=THRESHOLDS, threshold_policy={"kind": "max_f1"},
                                 metrics={})
    path = tmp_path / f"{name}.pth"
    model.save_checkpoint(ckpt, path)
    return model.load(path), ckpt


@pytest.mark.parametrize("name", BACKBONES)
def test_checkpoint_holds_every_weight_and_loads_safely(tmp_path, name):
    loaded, ckpt = _exported(tmp_path, name)
    raw = torch.from_numpy(random_images(2, 80, seed=3))
    rebuilt = model.InspectionModel(model.model_from_checkpoint(ckpt).net, loaded.cfg,
                                    [0.4, 0.5, 0.6], [0.2, 0.2, 0.1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(raw)[0], rebuilt(raw)[0])
    plain = torch.load(tmp_path / f"{name}.pth", weights_only=True)
    assert plain["arch"]["backbone"] == name
    assert all(k.startswith(("backbone.", "head.")) for k in plain["state_dict"])
    assert isinstance(loaded.net, type(model.build_model(loaded.cfg)))


@pytest.mark.parametrize("name", BACKBONES)
def test_onnx_export_matches_pytorch(tmp_path, name):
    loaded, _ = _exported(tmp_path, name)
    path = export_onnx(loaded, tmp_path / f"{name}.onnx", example_size=80)
    session = onnx_session(path)
    # resized from another size (the delivered 310 px, downscaled here to keep it quick)
    check = compare_onnx(loaded, session, random_images(3, 80, seed=4), name="random")
    assert check.ok, check
    assert np.isfinite(check.max_diff)
