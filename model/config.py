"""The architecture of an inspection network as one frozen, plain-data dataclass per family.

:class:`CNNConfig` describes a CNN trained from scratch, :class:`BackboneConfig` an ImageNet
backbone from timm with an inspection head. Each is the single source of truth for its
network: the builder reads only it, and the checkpoint stores ``cfg.to_dict()`` (plain lists,
strings and numbers) so that a ``.pth`` loads with ``torch.load(path, weights_only=True)`` and
rebuilds the same module; :func:`arch_from_dict` tells the two apart (a backbone's dict has a
``backbone`` key).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

from .channels import CHANNELS

TASKS: tuple[str, ...] = ("binary", "multilabel", "multiclass")
"""Head types: 1 logit (defect), 2 logits (print, physical), 4 logits (0_0, 0_1, 1_0, 1_1)."""

N_OUTPUTS: dict[str, int] = {"binary": 1, "multilabel": 2, "multiclass": 4}

ACTIVATIONS: tuple[str, ...] = ("relu", "silu", "swish", "gelu", "leaky_relu", "mish")
POOLS: tuple[str, ...] = ("max", "avg")
HEAD_POOLS: tuple[str, ...] = ("avg", "max", "flatten")
STEMS: tuple[str, ...] = ("single", "split")
"""``split``: NORMAL (relief) and the other channels (ink) each get their own first block."""
RELIEF = "NORMAL"
BACKBONES: tuple[str, ...] = ("tf_efficientnet_lite0", "mobilenetv3_large_100", "resnet18",
                              "convnext_atto")
"""timm models offered as pretrained backbones: small enough to fine-tune on a CPU at 128 px."""
BACKBONE_POOLS: tuple[str, ...] = ("avg", "max", "avgmax")
"""Pooling of a backbone's last feature map; ``avgmax`` concatenates both (2x the features)."""
PATCH_POOLS: tuple[str, ...] = ("max", "topk", "lse")
"""How a patch model turns its per-patch logits into the eraser's: the strongest patch, the
mean of the few strongest (:data:`TOPK_SHARE`), or a soft maximum (log-sum-exp)."""
PATCH_TASKS: tuple[str, ...] = ("binary", "multilabel")  # "is it anywhere", per defect kind
PATCH_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
TOPK_SHARE = 0.02  # of the patches, at least one
KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)
MIN_DEPTH, MAX_DEPTH = 2, 6
MIN_CONVS, MAX_CONVS = 1, 3


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True as a width is always a bug.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate_channels(owner: str, channels: tuple[str, ...]) -> None:
    if not channels:
        raise ValueError(f"{owner}.channels is empty; choose at least one channel")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ValueError(f"{owner}.channels has unknown channel(s) {unknown}; "
                         f"known: {list(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"{owner}.channels has duplicates: {list(channels)}")
    canonical = tuple(c for c in CHANNELS if c in channels)
    if channels != canonical:
        # One order everywhere keeps normalisation statistics and weights aligned.
        raise ValueError(f"{owner}.channels must follow the source order {list(CHANNELS)}; "
                         f"write {list(canonical)} instead of {list(channels)}")


class ArchBase:
    """What both architecture configs share: their plain-data form (``to_dict``/``from_dict``,
    what a checkpoint stores) and the network's input and output counts."""

    def _coerce(self, sequences: tuple[str, ...] = (), integers: tuple[str, ...] = (),
                numbers: tuple[str, ...] = ()) -> None:
        """Lists to tuples, numpy scalars to Python numbers (configs from JSON or an Optuna
        trial then compare and hash normally), each field checked for its kind."""
        owner = type(self).__name__
        for name in sequences:
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ValueError(f"{owner}.{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))  # how a frozen dataclass adjusts
        for name in integers:
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{owner}.{name} must be an integer, "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in numbers:
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{owner}.{name} must be a number, "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def in_channels(self) -> int:
        """Number of input channels the network sees."""
        return len(self.channels)

    @property
    def n_outputs(self) -> int:
        """Number of logits: 1 (binary), 2 (multilabel) or 4 (multiclass)."""
        return N_OUTPUTS[self.task]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown key(s) {unknown}; known: "
                             f"{sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class CNNConfig(ArchBase):
    """A plain VGG-style CNN: ``depth`` conv blocks, each followed by a 2x2 pool, then a head.

    With ``stem='split'`` the first block is two: one for NORMAL (surface relief, where
    physical defects show) and one for the other channels (ink), each half as wide, joined
    after the first pool, so that five ink channels cannot drown the one relief channel.

    Lists given for the tuple fields are turned into tuples, and numpy scalars into Python
    numbers, so that configs coming from JSON or an Optuna trial compare and hash normally.
    Every field is validated; an invalid combination raises ``ValueError``.
    """

    channels: tuple[str, ...] = CHANNELS
    input_size: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)
    convs_per_block: int = 2
    activation: str = "relu"
    pool: str = "max"
    spatial_dropout: float = 0.0
    head_pool: str = "avg"
    dense_width: int = 128
    dense_dropout: float = 0.2
    task: str = "multilabel"
    stem: str = "single"

    def __post_init__(self) -> None:
        self._normalise_types()
        self._validate()

    def _normalise_types(self) -> None:
        # object.__setattr__ is the documented way to adjust fields of a frozen dataclass.
        for name in ("channels", "widths", "kernel_sizes"):
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ValueError(f"CNNConfig.{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("widths", "kernel_sizes"):
            values = getattr(self, name)
            if not all(_is_int(v) for v in values):
                raise ValueError(f"CNNConfig.{name} must hold integers, got {list(values)!r}")
            object.__setattr__(self, name, tuple(int(v) for v in values))
        for name in ("input_size", "convs_per_block", "dense_width"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ValueError(f"CNNConfig.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("spatial_dropout", "dense_dropout"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ValueError(f"CNNConfig.{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))

    def _validate(self) -> None:
        _validate_channels("CNNConfig", self.channels)
        depth = len(self.widths)
        if not MIN_DEPTH <= depth <= MAX_DEPTH:
            raise ValueError(
                f"CNNConfig.widths gives depth {depth}; it must have {MIN_DEPTH}..{MAX_DEPTH} "
                "entries (one per conv block)"
            )
        if any(w < 1 for w in self.widths):
            raise ValueError(f"CNNConfig.widths must be positive, got {list(self.widths)}")
        if len(self.kernel_sizes) != depth:
            raise ValueError(
                f"CNNConfig.kernel_sizes has {len(self.kernel_sizes)} entries but there are "
                f"{depth} blocks; give one kernel size per block"
            )
        bad = [k for k in self.kernel_sizes if k not in KERNEL_SIZES]
        if bad:
            raise ValueError(
                f"CNNConfig.kernel_sizes has {bad}; each must be one of {list(KERNEL_SIZES)}"
            )
        if not MIN_CONVS <= self.convs_per_block <= MAX_CONVS:
            raise ValueError(
                f"CNNConfig.convs_per_block is {self.convs_per_block}; "
                f"it must be {MIN_CONVS}..{MAX_CONVS}"
            )
        if self.input_size < 1:
            raise ValueError(f"CNNConfig.input_size must be positive, got {self.input_size}")
        if self.input_size // 2**depth < 1:
            raise ValueError(
                f"CNNConfig: input_size {self.input_size} with {depth} pooling blocks leaves "
                f"a {self.input_size // 2**depth}x{self.input_size // 2**depth} feature map; "
                f"use input_size >= {2**depth} or fewer blocks"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"CNNConfig.activation {self.activation!r} is unknown; known: {list(ACTIVATIONS)}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"CNNConfig.pool {self.pool!r} is unknown; known: {list(POOLS)}")
        if self.head_pool not in HEAD_POOLS:
            raise ValueError(
                f"CNNConfig.head_pool {self.head_pool!r} is unknown; known: {list(HEAD_POOLS)}"
            )
        for name in ("spatial_dropout", "dense_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"CNNConfig.{name} must be in [0, 1), got {value}")
        if self.dense_width < 0:
            raise ValueError(
                f"CNNConfig.dense_width must be >= 0 (0 = no hidden layer), got {self.dense_width}"
            )
        if self.task not in TASKS:
            raise ValueError(f"CNNConfig.task {self.task!r} is unknown; known: {list(TASKS)}")
        if self.stem not in STEMS:
            raise ValueError(f"CNNConfig.stem {self.stem!r} is unknown; known: {list(STEMS)}")
        if self.stem == "split" and (RELIEF not in self.channels or len(self.channels) < 2):
            raise ValueError(f"CNNConfig.stem 'split' gives {RELIEF} and the other channels "
                             f"their own first block; it needs {RELIEF} and at least one other "
                             f"channel, not {list(self.channels)}")
        if self.stem == "split" and self.widths[0] < 2:
            raise ValueError("CNNConfig.stem 'split' halves the first width; it must be >= 2")

    @property
    def depth(self) -> int:
        """Number of conv blocks (and of 2x2 pooling steps)."""
        return len(self.widths)

    @property
    def stem_widths(self) -> tuple[int, int]:
        """Channels of the ink and the relief first block of a split stem (together the first
        width)."""
        return self.widths[0] - self.widths[0] // 2, self.widths[0] // 2

    @property
    def feature_size(self) -> int:
        """Side of the last feature map (floor division by 2 per block)."""
        return self.input_size // 2**self.depth


@dataclass(frozen=True)
class BackboneConfig(ArchBase):
    """An ImageNet backbone from timm (``backbone``, one of :data:`BACKBONES`) taking
    ``channels`` through its ``in_chans`` stem, then the inspection head: ``head_pool`` over
    the last feature map, an optional hidden layer of ``dense_width``, dropout, the logits.

    Which weights it starts from and how much of it trains are training matters
    (``TrainConfig.backbone_lr_scale``); the architecture is the same either way.
    """

    backbone: str = BACKBONES[0]
    channels: tuple[str, ...] = CHANNELS
    input_size: int = 160
    head_pool: str = "avg"
    dense_width: int = 0
    dense_dropout: float = 0.2
    task: str = "multilabel"

    def __post_init__(self) -> None:
        self._coerce(sequences=("channels",), integers=("input_size", "dense_width"),
                     numbers=("dense_dropout",))
        if self.backbone not in BACKBONES:
            raise ValueError(f"BackboneConfig.backbone {self.backbone!r} is unknown; known: "
                             f"{list(BACKBONES)}")
        _validate_channels("BackboneConfig", self.channels)
        if self.task not in TASKS:
            raise ValueError(f"BackboneConfig.task {self.task!r} is unknown; known: "
                             f"{list(TASKS)}")
        if self.dense_width < 0:
            raise ValueError(f"BackboneConfig.dense_width must be >= 0 (0 = linear head), "
                             f"got {self.dense_width}")
        if not 0.0 <= self.dense_dropout < 1.0:
            raise ValueError(f"BackboneConfig.dense_dropout must be in [0, 1), "
                             f"got {self.dense_dropout}")
        if self.input_size < 64:
            # five stride-2 stages: below 64 px the last feature map is a single pixel, and
            # BatchNorm cannot train on a batch of one such map
            raise ValueError(f"BackboneConfig.input_size must be >= 64, got {self.input_size}")
        if self.head_pool not in BACKBONE_POOLS:
            raise ValueError(f"BackboneConfig.head_pool {self.head_pool!r} is unknown; known: "
                             f"{list(BACKBONE_POOLS)}")


@dataclass(frozen=True)
class PatchConfig(ArchBase):
    """Local evidence at native resolution: the intermediate feature maps of an ImageNet
    backbone (``backbone``, its stages at ``strides``, pooled onto the coarsest one), each
    patch scored by a small head shared by all patches (1x1 convolutions, ``head_width``
    hidden channels), the eraser's logits pooled over its patches (``pool``,
    :data:`PATCH_POOLS`), as multiple-instance learning: a print error is a small local
    change, and one patch that shows it decides.

    ``memory`` > 0 keeps that many patches of good training erasers (a PatchCore-style memory
    bank); each patch's distance to its nearest one is a reference-based anomaly score that
    the head sees beside the features. The backbone stays frozen (features computed once per
    delivery); the head and the bank are what a trial learns.
    """

    backbone: str = BACKBONES[0]
    channels: tuple[str, ...] = ("GRAY", "W", "NORMAL")
    input_size: int = 224
    strides: tuple[int, ...] = (8, 16)
    memory: int = 4096
    pool: str = "max"
    head_width: int = 64
    dense_dropout: float = 0.1
    task: str = "multilabel"

    def __post_init__(self) -> None:
        self._coerce(sequences=("channels", "strides"),
                     integers=("input_size", "memory", "head_width"), numbers=("dense_dropout",))
        if not all(_is_int(v) for v in self.strides):
            raise ValueError(f"PatchConfig.strides must hold integers, got {self.strides!r}")
        object.__setattr__(self, "strides", tuple(int(v) for v in self.strides))
        if self.backbone not in BACKBONES:
            raise ValueError(f"PatchConfig.backbone {self.backbone!r} is unknown; known: "
                             f"{list(BACKBONES)}")
        _validate_channels("PatchConfig", self.channels)
        if self.task not in PATCH_TASKS:
            raise ValueError(f"PatchConfig.task {self.task!r}: a patch model says whether a "
                             f"defect is anywhere, one of {list(PATCH_TASKS)}")
        if (not self.strides or list(self.strides) != sorted(set(self.strides))
                or set(self.strides) - set(PATCH_STRIDES)):
            raise ValueError(f"PatchConfig.strides {list(self.strides)} must be increasing "
                             f"values of {list(PATCH_STRIDES)}")
        if self.input_size < 2 * self.strides[-1]:
            raise ValueError(f"PatchConfig.input_size {self.input_size} leaves less than 2x2 "
                             f"patches at stride {self.strides[-1]}")
        if self.memory < 0 or self.head_width < 0:
            raise ValueError("PatchConfig.memory and head_width must be >= 0 (0: none)")
        if self.pool not in PATCH_POOLS:
            raise ValueError(f"PatchConfig.pool {self.pool!r} is unknown; known: "
                             f"{list(PATCH_POOLS)}")
        if not 0.0 <= self.dense_dropout < 1.0:
            raise ValueError(f"PatchConfig.dense_dropout must be in [0, 1), "
                             f"got {self.dense_dropout}")

    @property
    def grid(self) -> int:
        """Patches per side: the input over the coarsest stride."""
        return self.input_size // self.strides[-1]


ArchConfig: TypeAlias = CNNConfig | BackboneConfig | PatchConfig
"""Any network family's architecture."""
PretrainedConfig: TypeAlias = BackboneConfig | PatchConfig
"""The families that start from ImageNet weights."""


def arch_from_dict(d: dict[str, Any]) -> ArchConfig:
    """The config a ``to_dict()`` came from: a backbone's has a ``backbone`` key, a patch
    model's also ``strides``."""
    if not isinstance(d, dict):
        raise ValueError(f"an architecture must be a dict, got {type(d).__name__}")
    if "backbone" not in d:
        return CNNConfig.from_dict(d)
    return (PatchConfig if "strides" in d else BackboneConfig).from_dict(d)
