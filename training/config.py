"""How a network is trained: :class:`TrainConfig`, and :class:`RunConfig` (architecture,
training and augmentation together: one complete, replayable run), with its run-file format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from data.augment import AugmentConfig
from model import CNNConfig, ThresholdPolicy
from model.config import ArchConfig, arch_from_dict
from model.fileio import write_text

METRICS = ("graded_ap", "defect_ap", "graded_f1")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about how a network is trained (the architecture is in ``RunConfig.model``)."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd (with Nesterov momentum)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | onecycle | constant
    grad_clip: float = 1.0  # max gradient norm; 0 switches clipping off
    loss: str = "bce"  # bce | focal (multiclass: ce | focal)
    pos_weight_factor: float = 1.0  # times n_neg/n_pos (sigmoid heads); 0 = no weighting
    class_weight_power: float = 1.0  # multiclass: (1/frequency)**power; 0 = no weighting
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    neg_smoothing: float = 0.0  # one-sided: labelled-good targets become this (missed defects)
    sampling: str = "shuffle"  # shuffle | balanced (then no loss weighting)
    flagged_weight: float = 1.0  # loss weight of erasers flagged as suspected mislabels
    # A pretrained backbone's learning rate as a share of ``lr`` (the head's); 0 freezes it
    # (only the head trains, on feature maps computed once). Scratch CNNs ignore it.
    backbone_lr_scale: float = 0.1
    early_stop_patience: int = 8  # epochs without improvement; 0 = never stop early
    metric: str = "graded_ap"  # what "best epoch" and the study maximise
    threshold: str = "max_f1"  # max_f1 | min_recall
    min_recall: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs two samples)"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
            (self.lr > 0, "lr must be > 0"),
            (self.schedule in ("cosine", "onecycle", "constant"),
             "schedule must be cosine, onecycle or constant"),
            (self.sampling in ("shuffle", "balanced"), "sampling must be shuffle or balanced"),
            (self.metric in METRICS, f"metric must be one of {METRICS}"),
            (0.0 <= self.flagged_weight <= 1.0, "flagged_weight must be in [0, 1]"),
            (0.0 <= self.backbone_lr_scale <= 1.0, "backbone_lr_scale must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.sampling == "balanced" and (self.pos_weight_factor or self.class_weight_power):
            # Both re-balance the classes; together they would over-weight the minority.
            raise ValueError("balanced sampling and loss weighting are exclusive: set "
                             "pos_weight_factor=0 and class_weight_power=0 with sampling "
                             "'balanced'")
        ThresholdPolicy(self.threshold, self.min_recall)  # validates the policy

    @property
    def policy(self) -> ThresholdPolicy:
        return ThresholdPolicy(self.threshold, self.min_recall)


@dataclass(frozen=True)
class RunConfig:
    """One complete, replayable training run: architecture, training and augmentation."""

    model: ArchConfig = field(default_factory=CNNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": asdict(self.train),
                "augment": self.augment.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """From plain data (``to_dict``'s shape; missing keys keep their defaults). Raises
        ``ValueError`` or ``TypeError`` naming what does not fit."""
        if not isinstance(d, dict) or not all(isinstance(d.get(k, {}), dict)
                                              for k in ("model", "train", "augment")):
            raise ValueError("expected a JSON object with model, train and augment objects")
        unknown = set(d) - {"model", "train", "augment"}
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}; expected model, train, "
                             "augment")
        train_keys = {f.name for f in fields(TrainConfig)}
        bad = set(d.get("train", {})) - train_keys
        if bad:
            raise ValueError(f"unknown train key(s) {sorted(bad)}; known: {sorted(train_keys)}")
        aug_keys = {f.name for f in fields(AugmentConfig)}
        bad = set(d.get("augment", {})) - aug_keys
        if bad:
            raise ValueError(f"unknown augment key(s) {sorted(bad)}; known: {sorted(aug_keys)}")
        return cls(model=arch_from_dict(d.get("model", {})),
                   train=TrainConfig(**d.get("train", {})),
                   augment=AugmentConfig(**d.get("augment", {})))


class RunFileError(ValueError):
    """A run file that cannot be read or holds no run configuration (message is user-facing)."""


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write ``config`` as a run file (JSON) that :func:`load_config` reads back."""
    return write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(path: str | Path, **train: object) -> RunConfig:
    """The run file at ``path`` (``save_config``'s JSON; missing keys keep their defaults),
    with the ``train`` settings given here overriding the file's. Raises
    :class:`RunFileError` naming the file and what is wrong with it."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"cannot read the run file {path}: {exc}") from None
    try:
        config = RunConfig.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise RunFileError(f"{path} is not a valid run configuration: {exc}") from None
    return replace(config, train=replace(config.train, **train)) if train else config
