"""The patch family (model.patch): local features of a backbone's intermediate stages, a
memory bank of good patches, a head shared by every patch and pooled over them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import model
from model.config import PatchConfig, arch_from_dict
from model.onnx import compare_onnx, export_onnx, random_images
from model.patch import PatchNet, nearest_distance, stage_indices
from model.pt2 import compare_pt2, export_pt2, load_pt2

SMALL = PatchConfig(backbone="resnet18", channels=("GRAY", "NORMAL"),
                    input_size=64, memory=32, head_width=8)


def filled(cfg: PatchConfig = SMALL, seed: int = 0) -> PatchNet:
    """A patch network whose bank and head statistics are not the defaults."""
    torch.manual_seed(seed)
    net = model.build_model(cfg)
    if cfg.memory:
        net.bank.normal_()
    net.head.train()
    with torch.no_grad():
        net.head(net.with_memory(net.backbone.forward_features(
            torch.randn(4, cfg.in_channels, cfg.input_size, cfg.input_size))))
    return net.eval()


@pytest.mark.parametrize("pool", ["max", "topk", "lse"])
@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_shapes_and_no_nan(pool, task):
    cfg = PatchConfig(**{**SMALL.to_dict(), "pool": pool, "task": task})
    net = filled(cfg)
    out = net(torch.randn(3, 2, 64, 64))
    assert out.shape == (3, cfg.n_outputs) and torch.isfinite(out).all()
    assert net.head.patch_logits(net.with_memory(net.backbone.forward_features(
        torch.randn(1, 2, 64, 64)))).shape == (1, cfg.n_outputs, cfg.grid, cfg.grid)


def test_every_trainable_parameter_of_the_head_gets_a_gradient():
    net = filled()
    net.backbone.requires_grad_(False)  # frozen: only the head learns
    net.train()
    net(torch.randn(4, 2, 64, 64)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing and all(p.grad is None for p in net.backbone.parameters())


def test_nearest_distance_is_the_smallest_euclidean_distance_and_can_leave_rows_out():
    torch.manual_seed(1)
    fmap, bank = torch.randn(2, 5, 3, 3), torch.randn(2500, 5)  # more rows than one chunk
    got = nearest_distance(fmap, bank)
    patches = fmap.permute(0, 2, 3, 1).reshape(2, 9, 5)
    want = torch.cdist(patches, bank[None].expand(2, -1, -1)).amin(-1).reshape(2, 1, 3, 3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    bank[7] = patches[0, 4]  # one patch of eraser 0 is in the bank...
    exclude = torch.zeros(2, 2500, dtype=torch.bool)
    assert nearest_distance(fmap, bank)[0, 0, 1, 1] < 1e-3
    exclude[0, 7] = True  # ...and left out for its own eraser
    assert nearest_distance(fmap, bank, exclude)[0, 0, 1, 1] > 0.1


def test_strides_map_to_each_backbones_stages():
    assert stage_indices("tf_efficientnet_lite0", (8, 16)) == (2, 3)
    assert stage_indices("convnext_atto", (8, 16)) == (1, 2)  # its first stage is at 4
    with pytest.raises(ValueError, match="no feature stage at stride"):
        stage_indices("convnext_atto", (4, 8, 32, 64))


@pytest.mark.parametrize("bad, match", [
    ({"task": "multiclass"}, "anywhere"), ({"strides": (16, 8)}, "increasing"),
    ({"input_size": 16}, "2x2 patches"), ({"pool": "mean"}, "unknown"),
    ({"memory": -1}, ">= 0")])
def test_invalid_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        PatchConfig(**{**SMALL.to_dict(), **bad})


def test_the_config_round_trips_as_plain_data_and_the_checkpoint_carries_the_bank(tmp_path):
    assert arch_from_dict(SMALL.to_dict()) == SMALL
    net = filled()
    ckpt = model.make_checkpoint(net=net, cfg=SMALL, mean=[0.5, 0.5], std=[0.2, 0.2],
                                 thresholds=dict.fromkeys(model.PROB_NAMES, 0.5),
                                 threshold_policy=model.ThresholdPolicy(), metrics={})
    loaded = model.load(model.save_checkpoint(ckpt, tmp_path / "p.pth"))
    assert torch.equal(loaded.net.bank, net.bank)
    images = random_images(2, 80, seed=2)
    probs = model.predict(loaded, images)
    assert probs.shape == (2, 4) and np.isfinite(probs).all()
    assert "patches s8+16 @4x4, bank 32" in model.describe(SMALL)


def test_onnx_and_pt2_agree_with_pytorch(tmp_path):
    inference = model.InspectionModel(filled(), SMALL, [0.5, 0.5], [0.2, 0.2],
                                      dict.fromkeys(model.PROB_NAMES, 0.5)).eval()
    inference.meta = {"source_size": 80}
    images = random_images(3, 80, seed=3)
    session = ort.InferenceSession(str(export_onnx(inference, tmp_path / "p.onnx")),
                                   providers=["CPUExecutionProvider"])
    assert compare_onnx(inference, session, images).ok
    module, _ = load_pt2(export_pt2(inference, tmp_path / "p.pt2"))
    assert compare_pt2(inference, module, images).ok
