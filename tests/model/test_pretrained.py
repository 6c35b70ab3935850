"""Where ImageNet weights come from, and timm's loader putting them into N-channel stems."""

from __future__ import annotations

import shutil

import pytest
import torch

import model
from model.config import BackboneConfig
from model.pretrained import WEIGHTS_ENV, WeightFinder, WeightsError, load_pretrained, online

LITE = "tf_efficientnet_lite0"


def test_a_folder_or_a_file_named_after_the_backbone(backbone_weights, tmp_path):
    finder = WeightFinder(backbone_weights)
    assert finder.require(LITE) == backbone_weights / f"{LITE}.pth"
    assert finder.file("resnet18") is None  # not given, not cached, never downloaded here
    assert set(finder.local(["resnet18", LITE])) == {LITE}
    single = tmp_path / f"{LITE}.in1k.safetensors"
    single.write_bytes(b"")
    assert WeightFinder(single).user == {LITE: single}


def test_the_environment_variable_is_the_default(backbone_weights, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(backbone_weights))
    assert WeightFinder().require(LITE).parent == backbone_weights
    monkeypatch.setenv(WEIGHTS_ENV, "/no/such/folder")
    with pytest.raises(WeightsError, match=f"{WEIGHTS_ENV} /no/such/folder does not exist"):
        WeightFinder()


def test_missing_or_unnamed_weights_say_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match=r"--weights .* does not exist"):
        WeightFinder(tmp_path / "nothing")
    (tmp_path / "weights.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="named after a known backbone"):
        WeightFinder(tmp_path)
    with pytest.raises(WeightsError, match="no ImageNet weights for resnet18 on this machine"):
        WeightFinder().require("resnet18")


def test_offline_nothing_is_downloaded_and_nothing_raises():
    assert not online()  # the tests set HF_HUB_OFFLINE
    assert WeightFinder().fetch(["resnet18"]) == {}


def test_stem_adapted_to_the_channels_and_classifier_dropped(backbone_weights):
    rgb = torch.load(backbone_weights / f"{LITE}.pth", weights_only=True)
    for channels in (("GRAY", "W", "NORMAL"), ("GRAY", "NORMAL"), ("NORMAL",)):
        cfg = BackboneConfig(backbone=LITE, channels=channels, input_size=64)
        net = model.build_model(cfg)
        load_pretrained(net, cfg, backbone_weights / f"{LITE}.pth")
        stem = net.backbone.conv_stem.weight
        assert stem.shape[1] == len(channels)
        if len(channels) == 3:
            torch.testing.assert_close(stem, rgb["conv_stem.weight"])
        elif len(channels) == 1:  # timm sums the RGB filters for one channel
            torch.testing.assert_close(stem[:, 0], rgb["conv_stem.weight"].sum(1))
        else:  # the RGB filters repeated over the channels, scaled by 3 / N
            torch.testing.assert_close(stem, rgb["conv_stem.weight"][:, :2] * 1.5)
        torch.testing.assert_close(net.backbone.blocks[1][0].conv_pw.weight,
                                   rgb["blocks.1.0.conv_pw.weight"])


def test_weights_of_another_network_are_refused(backbone_weights, tmp_path):
    wrong = tmp_path / f"{LITE}.pth"
    shutil.copy(backbone_weights / "mobilenetv3_large_100.pth", wrong)
    cfg = BackboneConfig(backbone=LITE, input_size=64)
    with pytest.raises(WeightsError, match=f"does not hold ImageNet weights of {LITE}"):
        load_pretrained(model.build_model(cfg), cfg, wrong)
