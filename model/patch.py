"""Local evidence at native resolution: a pretrained backbone's intermediate feature maps,
scored patch by patch, with a memory bank of good erasers' patches (the patch family).

A print error is a small local change (often a few percent of the crop) against a pattern
every good eraser repeats. Shrinking the whole eraser to 64 px for a scratch CNN leaves a
letter's stroke about a pixel wide; here the eraser is seen at 224-320 px by an ImageNet
backbone, and its stride-8 and stride-16 maps (``PatchConfig.strides``), each averaged over
its 3x3 neighbourhood and pooled onto the coarsest grid (PatchCore's locally aware patch
features, Roth et al. 2022), describe every patch of the eraser. Two things score a patch:

* its distance to the nearest of ``memory`` patches of good training erasers (the memory
  bank, a buffer of the module, filled by :mod:`training.memory`): a reference-based anomaly
  score that needs no defective example;
* a small head shared by all patches (1x1 convolutions) that reads the features and the
  distance, trained on the labels.

The eraser's logits are the patches' pooled (max, top-k mean or log-sum-exp): one patch that
shows a defect decides, as in multiple-instance learning. Module names: ``backbone.*`` (the
timm feature extractor, frozen), ``bank`` and ``head.*``.
"""

from __future__ import annotations

import functools
import math

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .config import TOPK_SHARE, PatchConfig

LSE_SHARPNESS = 5.0  # log-sum-exp pooling: between the mean (0) and the max (infinity)
BANK_CHUNK = 1024  # bank rows compared at a time: bounded memory at any batch size


@functools.lru_cache(maxsize=16)
def stage_indices(backbone: str, strides: tuple[int, ...]) -> tuple[int, ...]:
    """timm's ``out_indices`` of ``backbone``'s feature stages at ``strides`` (read from its
    ``feature_info`` on a weightless copy). ``ValueError`` when it has no stage at one."""
    with torch.device("meta"):
        info = timm.create_model(backbone, features_only=True, pretrained=False).feature_info
    reductions = info.reduction()
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise ValueError(f"{backbone} has no feature stage at stride(s) {missing}; its stages "
                         f"are at {reductions}")
    # the last stage of each stride: the deepest features at that resolution
    return tuple(max(i for i, r in enumerate(reductions) if r == s) for s in strides)


class PatchFeatures(nn.Module):
    """The frozen part: ``forward_features`` maps ``(B, C, S, S)`` to patch features
    ``(B, num_features, S / coarsest stride, same)``."""

    def __init__(self, cfg: PatchConfig) -> None:
        super().__init__()
        self.body = timm.create_model(cfg.backbone, features_only=True, pretrained=False,
                                      in_chans=cfg.in_channels,
                                      out_indices=stage_indices(cfg.backbone, cfg.strides))
        self.strides = cfg.strides
        self.num_features = int(sum(self.body.feature_info.channels()))

    def forward_features(self, x: Tensor) -> Tensor:
        maps = self.body(x)
        out = []
        for fmap, stride in zip(maps, self.strides, strict=True):
            # each patch described with its neighbours (3x3), then onto the coarsest grid
            fmap = F.avg_pool2d(fmap, 3, stride=1, padding=1, count_include_pad=False)
            factor = self.strides[-1] // stride
            out.append(F.avg_pool2d(fmap, factor) if factor > 1 else fmap)
        return torch.cat(out, dim=1)


def nearest_distance(fmap: Tensor, bank: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Euclidean distance of every patch of ``fmap`` ``(B, D, h, w)`` to its nearest row of
    ``bank`` ``(M, D)``: ``(B, 1, h, w)``, in float32 whatever the input's precision.

    ``exclude`` ``(B, M)`` (bool) hides bank rows from a patch's own eraser: a training
    eraser whose patches are in the bank would otherwise find itself at distance zero.
    """
    b, d, h, w = fmap.shape
    q = fmap.float().permute(0, 2, 3, 1).reshape(b, h * w, d)
    qq = (q * q).sum(-1, keepdim=True)
    best = None
    for start in range(0, bank.shape[0], BANK_CHUNK):
        rows = bank[start:start + BANK_CHUNK].float()
        d2 = qq - 2 * q @ rows.T + (rows * rows).sum(-1)
        if exclude is not None:
            d2 = d2.masked_fill(exclude[:, None, start:start + BANK_CHUNK], math.inf)
        near = d2.amin(-1)
        best = near if best is None else torch.minimum(best, near)
    return best.clamp_min(0).sqrt().reshape(b, 1, h, w)


class PatchHead(nn.Module):
    """Per-patch logits from the features (and the distance), pooled over the patches."""

    def __init__(self, n_in: int, cfg: PatchConfig) -> None:
        super().__init__()
        self.pool = cfg.pool
        self.k = max(1, round(TOPK_SHARE * cfg.grid * cfg.grid))
        self.norm = nn.BatchNorm2d(n_in)  # features and distances on one scale
        layers: list[nn.Module] = []
        if cfg.head_width > 0:
            layers += [nn.Conv2d(n_in, cfg.head_width, 1), nn.SiLU(inplace=True)]
            n_in = cfg.head_width
        if cfg.dense_dropout > 0:
            layers.append(nn.Dropout(cfg.dense_dropout))
        layers.append(nn.Conv2d(n_in, cfg.n_outputs, 1))
        self.layers = nn.Sequential(*layers)

    def patch_logits(self, fmap: Tensor) -> Tensor:
        """``(B, n_outputs, h, w)``: each patch's own logits (where a defect is)."""
        return self.layers(self.norm(fmap.float()))

    def forward(self, fmap: Tensor) -> Tensor:
        """Logits ``(B, n_outputs)`` for patch features ``(B, F, h, w)``."""
        logits = self.patch_logits(fmap).flatten(2)
        if self.pool == "max":
            return logits.amax(dim=2)
        if self.pool == "topk":
            return logits.topk(min(self.k, logits.shape[2]), dim=2).values.mean(dim=2)
        n = logits.shape[2]
        return (torch.logsumexp(LSE_SHARPNESS * logits, dim=2) - math.log(n)) / LSE_SHARPNESS


class PatchNet(nn.Module):
    """``backbone`` (frozen features), ``bank`` (good patches; absent when ``memory`` is 0)
    and ``head``; ``forward`` maps a normalised ``(B, C, S, S)`` input to logits."""

    def __init__(self, cfg: PatchConfig) -> None:
        super().__init__()
        self.backbone = PatchFeatures(cfg)
        n_features = self.backbone.num_features
        self.memory = cfg.memory
        if cfg.memory:
            self.register_buffer("bank", torch.zeros(cfg.memory, n_features))
        self.head = PatchHead(n_features + (1 if cfg.memory else 0), cfg)

    def with_memory(self, fmap: Tensor) -> Tensor:
        """Patch features with their distance to the bank as one more channel."""
        if not self.memory:
            return fmap
        return torch.cat([fmap, nearest_distance(fmap, self.bank).to(fmap.dtype)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.with_memory(self.backbone.forward_features(x)))


@functools.lru_cache(maxsize=64)
def patch_complexity(cfg: PatchConfig) -> dict[str, int]:
    """``params`` (what trains: the head) and ``macs`` (batch 1, bank distances included),
    counted on a weightless copy."""
    with torch.device("meta"):
        net = PatchNet(cfg).eval()
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.empty(1, cfg.in_channels, cfg.input_size, cfg.input_size))
    params = sum(p.numel() for p in net.head.parameters())
    return {"params": int(params), "macs": int(counter.get_total_flops() // 2)}


def describe_patch(cfg: PatchConfig) -> str:
    """E.g. ``tf_efficientnet_lite0 (ImageNet) patches s8+16 @14x14, bank 4096, max head 64
    drop0.1, multilabel, 3ch@224``."""
    head = f"{cfg.pool} head {cfg.head_width if cfg.head_width else 'linear'}"
    if cfg.dense_dropout > 0:
        head += f" drop{cfg.dense_dropout:.2g}"
    bank = f", bank {cfg.memory}" if cfg.memory else ""
    strides = "+".join(str(s) for s in cfg.strides)
    return (f"{cfg.backbone} (ImageNet) patches s{strides} @{cfg.grid}x{cfg.grid}{bank}, "
            f"{head}, {cfg.task}, {cfg.in_channels}ch@{cfg.input_size}")
