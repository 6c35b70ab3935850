"""Build the inspection network from its config (the scratch CNN here, a pretrained backbone
in :mod:`model.backbone`), and measure it.

``build_model`` is pure: no device, no data, no randomness beyond ``torch``'s global generator
used by the initialisers. Module names are stable and readable
(``features.block0.conv0``, ``features.block0.bn0``, ..., ``head.fc``, ``head.out``) because
they are the keys of the checkpoint's ``state_dict``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .config import RELIEF, ArchConfig, BackboneConfig, CNNConfig, PatchConfig

LEAKY_SLOPE = 0.01
"""Negative slope of ``leaky_relu`` (PyTorch's default), also used for its Kaiming gain."""


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; ``swish`` is an alias of ``silu``."""
    # In-place where the op allows it: every activation follows a BatchNorm or a Linear whose
    # output nothing else reads, and it saves a feature map of memory per conv.
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name in ("silu", "swish"):
        return nn.SiLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if name == "mish":
        return nn.Mish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def conv_block(cfg: CNNConfig, in_ch: int, width: int, k: int) -> nn.Sequential:
    """``convs_per_block`` x (conv, BatchNorm, activation), then the 2x2 pool (and dropout)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for c in range(cfg.convs_per_block):
        # No conv bias: the BatchNorm right after it has its own shift.
        layers[f"conv{c}"] = nn.Conv2d(in_ch, width, k, padding=k // 2, bias=False)
        layers[f"bn{c}"] = nn.BatchNorm2d(width)
        layers[f"act{c}"] = make_activation(cfg.activation)
        in_ch = width
    layers["pool"] = nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2)
    if cfg.spatial_dropout > 0:
        layers["drop"] = nn.Dropout2d(cfg.spatial_dropout)
    return nn.Sequential(layers)


class SplitStem(nn.Module):
    """The first block of a split stem: ``ink`` sees every channel but NORMAL, ``relief``
    sees NORMAL alone; their feature maps are stacked (ink first) after the first pool."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        names = list(cfg.channels)
        relief = names.index(RELIEF)
        self.register_buffer("ink_index", torch.tensor([i for i in range(len(names))
                                                        if i != relief]), persistent=False)
        self.register_buffer("relief_index", torch.tensor([relief]), persistent=False)
        ink_w, relief_w = cfg.stem_widths
        k = cfg.kernel_sizes[0]
        self.ink = conv_block(cfg, len(names) - 1, ink_w, k)
        self.relief = conv_block(cfg, 1, relief_w, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.ink(x.index_select(1, self.ink_index)),
                          self.relief(x.index_select(1, self.relief_index))], dim=1)


class InspectionCNN(nn.Module):
    """``features`` (conv blocks) followed by ``head`` (global pool or flatten, dense layers)."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = cfg.in_channels
        for b, (width, k) in enumerate(zip(cfg.widths, cfg.kernel_sizes, strict=True)):
            split = b == 0 and cfg.stem == "split"
            blocks[f"block{b}"] = SplitStem(cfg) if split else conv_block(cfg, in_ch, width, k)
            in_ch = width
        self.features = nn.Sequential(blocks)

        head: OrderedDict[str, nn.Module] = OrderedDict()
        if cfg.head_pool == "avg":
            head["pool"] = nn.AdaptiveAvgPool2d(1)
            n_in = in_ch
        elif cfg.head_pool == "max":
            head["pool"] = nn.AdaptiveMaxPool2d(1)
            n_in = in_ch
        else:
            n_in = in_ch * cfg.feature_size**2
        head["flatten"] = nn.Flatten(1)
        if cfg.dense_width > 0:
            head["fc"] = nn.Linear(n_in, cfg.dense_width)
            head["act"] = make_activation(cfg.activation)
            if cfg.dense_dropout > 0:
                head["drop"] = nn.Dropout(cfg.dense_dropout)
            n_in = cfg.dense_width
        elif cfg.dense_dropout > 0:
            # Dropout before the output layer still regularises a linear head.
            head["drop"] = nn.Dropout(cfg.dense_dropout)
        head["out"] = nn.Linear(n_in, cfg.n_outputs)
        self.head = nn.Sequential(head)
        # PyTorch's default initialisation, on purpose: the timm/torchvision recipe (Kaiming
        # fan-out convs, a near-zero output layer) left the physical-defect output untrained
        # on sets of a few hundred erasers (training AUROC ~0.7 against ~0.96 with the
        # defaults, 4 seeds; see bench/RESULTS.md, "Impact of label noise").

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_outputs)`` for a normalised float input ``(B, C, S, S)``."""
        return self.head(self.features(x))


def _backbones():
    # Imported on first use: timm adds about 1.5 s to every command's start (measured), and
    # scratch-only studies, predict.py and the data commands never need it.
    from . import backbone

    return backbone


def _patches():
    # Imported on first use, like _backbones (timm).
    from . import patch

    return patch


def build_model(cfg: ArchConfig) -> nn.Module:
    """A freshly initialised network for ``cfg`` (on the current default device); a
    backbone's weights are random too, until :func:`model.pretrained.load_pretrained`."""
    if isinstance(cfg, PatchConfig):
        return _patches().PatchNet(cfg)
    if isinstance(cfg, BackboneConfig):
        return _backbones().BackboneNet(cfg)
    return InspectionCNN(cfg)


def complexity(cfg: ArchConfig) -> dict[str, int]:
    """``params`` (trainable parameters) and ``macs`` (Conv2d + Linear multiply-adds, batch 1).

    For the scratch CNN computed analytically from the config (a test cross-checks it
    against forward hooks); for a backbone counted on a weightless copy.
    """
    if isinstance(cfg, PatchConfig):
        return _patches().patch_complexity(cfg)
    if isinstance(cfg, BackboneConfig):
        return _backbones().backbone_complexity(cfg)
    macs = 0
    params = 0
    side = cfg.input_size
    in_ch = cfg.in_channels
    # (input channels, width) of each parallel path of a block: two in a split stem's first
    paths = ([(cfg.in_channels - 1, cfg.stem_widths[0]), (1, cfg.stem_widths[1])]
             if cfg.stem == "split" else None)
    for b, (width, k) in enumerate(zip(cfg.widths, cfg.kernel_sizes, strict=True)):
        for path_in, path_w in (paths if b == 0 and paths else [(in_ch, width)]):
            for _ in range(cfg.convs_per_block):
                # 'same' padding (odd k, padding k//2) keeps the side length.
                macs += side * side * path_w * path_in * k * k
                params += path_w * path_in * k * k + 2 * path_w  # conv weight + BN affine
                path_in = path_w
        in_ch = width
        side //= 2
    n_in = in_ch if cfg.head_pool in ("avg", "max") else in_ch * side * side
    for n_out in ([cfg.dense_width] if cfg.dense_width > 0 else []) + [cfg.n_outputs]:
        macs += n_in * n_out
        params += n_in * n_out + n_out
        n_in = n_out
    return {"params": params, "macs": macs}


def describe(cfg: ArchConfig) -> str:
    """The architecture in one line, e.g.
    ``4x[2 conv 3-3-3-3] 32-64-128-256 relu max-pool, avg head 128, multilabel, 6ch@128``.
    """
    if isinstance(cfg, PatchConfig):
        return _patches().describe_patch(cfg)
    if isinstance(cfg, BackboneConfig):
        return _backbones().describe_backbone(cfg)
    kernels = "-".join(str(k) for k in cfg.kernel_sizes)
    widths = "-".join(str(w) for w in cfg.widths)
    body = f"{cfg.depth}x[{cfg.convs_per_block} conv {kernels}] {widths} {cfg.activation} "
    body += f"{cfg.pool}-pool"
    if cfg.spatial_dropout > 0:
        body += f" sdrop{cfg.spatial_dropout:.2g}"
    head = f"{cfg.head_pool} head {cfg.dense_width if cfg.dense_width > 0 else 'linear'}"
    if cfg.dense_dropout > 0:
        head += f" drop{cfg.dense_dropout:.2g}"
    stem = " split stem (NORMAL apart)" if cfg.stem == "split" else ""
    return f"{body}{stem}, {head}, {cfg.task}, {cfg.in_channels}ch@{cfg.input_size}"
