"""The frozen-backbone fast path: feature maps computed once, flip views, the cache."""

from __future__ import annotations

import torch

from data.pipeline import Preprocessor
from model import build_model
from model.config import BackboneConfig
from training.features import FLIP_VIEWS, FeatureCache, flip_view, frozen_features


def test_flip_views_are_the_four_mirror_images():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    views = [flip_view(x, v) for v in range(FLIP_VIEWS)]
    assert torch.equal(views[0], x)
    assert torch.equal(views[1], x.flip(3)) and torch.equal(views[2], x.flip(2))
    assert torch.equal(views[3], x.flip(2).flip(3))
    assert len({tuple(v.flatten().tolist()) for v in views}) == 4


def test_features_are_the_backbones_on_preprocessed_erasers():
    cfg = BackboneConfig(backbone="mobilenetv3_large_100", channels=("GRAY", "NORMAL"),
                         input_size=64)
    net = build_model(cfg).eval()
    pre = Preprocessor([0, 5], [0.5, 0.5], [0.2, 0.2])
    images = torch.randint(0, 256, (5, 6, 64, 64), dtype=torch.uint8)
    feats = frozen_features(net.backbone, pre, images, [4, 1], views=2, batch_size=1)
    assert feats.shape == (2, 2, net.backbone.num_features, 2, 2)
    with torch.no_grad():
        direct = net.backbone.forward_features(pre(images[[4]]).flip(3))
    torch.testing.assert_close(feats[0, 1], direct[0])
    # and the head on them gives the network's own logits
    with torch.no_grad():
        torch.testing.assert_close(net.head(feats[:, 0]), net(pre(images[[4, 1]])))


def test_cache_computes_once_and_keeps_what_fits():
    cache, calls = FeatureCache(max_bytes=16), []  # two float32 (2, 1) sets fit, not three

    def compute(tag):
        calls.append(tag)
        return torch.full((2, 1), float(len(calls)))

    assert cache.get(("a",), lambda: compute("a"))[0, 0] == 1
    assert cache.get(("a",), lambda: compute("a"))[0, 0] == 1 and cache.hits == 1
    cache.get(("b",), lambda: compute("b"))
    cache.get(("a",), lambda: compute("a"))  # kept beside b: a hit
    cache.get(("c",), lambda: compute("c"))  # b, the least recently used, makes room
    cache.get(("b",), lambda: compute("b"))
    assert calls == ["a", "b", "c", "b"] and cache.hits == 2
