"""An ImageNet backbone from timm under the inspection head: the pretrained network family.

``BackboneNet(cfg)`` is built like the scratch CNN, from its config alone and with random
weights (``pretrained=False``): the ImageNet weights come in at training time through
:func:`model.pretrained.load_pretrained`, and a checkpoint carries every weight, so rebuilding
an exported model never needs a download. The backbone takes the selected channels through
timm's ``in_chans`` (timm adapts the RGB stem weights to N channels when it loads them), so
NORMAL keeps filters of its own. Module names: ``backbone.*`` (timm's own) and ``head.*``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import BackboneConfig


def create_backbone(cfg: BackboneConfig, **kwargs) -> nn.Module:
    """timm's ``cfg.backbone`` without its classifier; its ``forward_features`` maps
    ``(B, C, S, S)`` to the last feature map ``(B, num_features, h, w)``. ``kwargs`` go to
    ``timm.create_model``. Modules that ``forward_features`` never calls (what timm runs
    after pooling: MobileNetV3's ``conv_head``, ConvNeXt's head norm) are removed, so that
    every parameter left trains and the checkpoint holds no dead weights."""
    net = timm.create_model(cfg.backbone, in_chans=cfg.in_channels, num_classes=0,
                            global_pool="", **kwargs)
    for name in _unused_modules(net, cfg):
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return net


def _unused_modules(net: nn.Module, cfg: BackboneConfig) -> list[str]:
    """Top-most modules holding parameters that a forward pass of the features never calls."""
    called: set[str] = set()
    hooks = [m.register_forward_hook(lambda *_, n=n: called.add(n))
             for n, m in net.named_modules() if n]
    with torch.no_grad():  # which modules run does not depend on the size: probe a small one
        net.eval().forward_features(torch.zeros(1, cfg.in_channels, 64, 64))
    net.train()
    for h in hooks:
        h.remove()
    unused = [n for n, m in net.named_modules()
              if n and n not in called and any(True for _ in m.parameters())]
    return [n for n in unused if not any(n.startswith(u + ".") for u in unused)]


class BackboneHead(nn.Module):
    """Pooling of the feature map, an optional hidden layer, dropout and the logits."""

    def __init__(self, n_features: int, cfg: BackboneConfig) -> None:
        super().__init__()
        self.pool = cfg.head_pool
        n_in = n_features * (2 if cfg.head_pool == "avgmax" else 1)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if cfg.dense_width > 0:
            layers["fc"] = nn.Linear(n_in, cfg.dense_width)
            layers["act"] = nn.SiLU(inplace=True)
            n_in = cfg.dense_width
        if cfg.dense_dropout > 0:
            layers["drop"] = nn.Dropout(cfg.dense_dropout)
        layers["out"] = nn.Linear(n_in, cfg.n_outputs)
        self.layers = nn.Sequential(layers)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_outputs)`` for a feature map ``(B, F, h, w)``."""
        if self.pool == "avg":
            pooled = fmap.mean(dim=(2, 3))
        elif self.pool == "max":
            # the strongest location: a small mark anywhere on the eraser can decide
            pooled = fmap.amax(dim=(2, 3))
        else:
            pooled = torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)
        return self.layers(pooled.float())


class BackboneNet(nn.Module):
    """``backbone`` (timm) then ``head``; ``forward`` maps a normalised float input
    ``(B, C, S, S)`` to logits ``(B, n_outputs)``."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg, pretrained=False)
        self.head = BackboneHead(self.backbone.num_features, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # forward_features: the map before any pooling (MobileNetV3's own head would pool)
        return self.head(self.backbone.forward_features(x))


@functools.lru_cache(maxsize=64)
def backbone_complexity(cfg: BackboneConfig) -> dict[str, int]:
    """``params`` and ``macs`` (batch 1), counted on a weightless meta-device copy."""
    with torch.device("meta"):
        net = BackboneNet(cfg).eval()
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.empty(1, cfg.in_channels, cfg.input_size, cfg.input_size))
    params = sum(p.numel() for p in net.parameters())
    return {"params": int(params), "macs": int(counter.get_total_flops() // 2)}


def describe_backbone(cfg: BackboneConfig) -> str:
    """E.g. ``tf_efficientnet_lite0 (ImageNet), avg head linear drop0.2, multilabel, 2ch@160``."""
    head = f"{cfg.head_pool} head {cfg.dense_width if cfg.dense_width > 0 else 'linear'}"
    if cfg.dense_dropout > 0:
        head += f" drop{cfg.dense_dropout:.2g}"
    return f"{cfg.backbone} (ImageNet), {head}, {cfg.task}, {cfg.in_channels}ch@{cfg.input_size}"
