"""Batched augmentation on the training device with kornia.

All six channels of an eraser are one object: geometric ops move them together, and intensity
ops run on [0, 1] floats before normalisation. Nothing mixes channels or assumes RGB (the
captures are separate illuminations, not colour planes). Every op draws its own random
parameters per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import kornia.augmentation as K
from torch import nn


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of each random op; zero switches an op off."""

    flips: bool = True  # horizontal/vertical flips and 90-degree turns: erasers have no up
    rotate_deg: float = 10.0
    translate: float = 0.04  # fraction of the side
    scale: float = 0.08  # +- relative zoom
    shear_deg: float = 4.0
    brightness: float = 0.10  # +- additive, on [0, 1]
    contrast: float = 0.10  # +- relative
    gamma: float = 0.10  # +- relative
    noise_std: float = 0.01
    blur_sigma: float = 0.0  # max sigma in pixels
    p: float = 0.5  # chance of each op per sample

    @classmethod
    def from_strength(cls, geometric: float, photometric: float,
                      flips: bool = True) -> AugmentConfig:
        """Two knobs in [0, 1] that the search tunes, mapped onto sensible ranges."""
        g, t = float(geometric), float(photometric)
        return cls(flips=flips, rotate_deg=20.0 * g, translate=0.08 * g, scale=0.15 * g,
                   shear_deg=8.0 * g, brightness=0.2 * t, contrast=0.2 * t, gamma=0.2 * t,
                   noise_std=0.03 * t, blur_sigma=1.2 * t if t >= 0.5 else 0.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        zeros = {f.name: 0.0 for f in fields(cls) if f.name not in ("flips", "p")}
        return cls(flips=False, **zeros)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return cls(**d)

    @property
    def enabled(self) -> bool:
        return self.flips or any(
            getattr(self, f.name) > 0 for f in fields(self) if f.name not in ("flips", "p"))


def build_augmenter(cfg: AugmentConfig) -> nn.Module | None:
    """A kornia pipeline for ``(B, C, S, S)`` float batches in [0, 1], or None if all off."""
    ops: list[nn.Module] = []
    if cfg.flips:
        ops += [K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
                K.RandomRotation90(times=(0, 3), p=cfg.p)]
    if max(cfg.rotate_deg, cfg.translate, cfg.scale, cfg.shear_deg) > 0:
        # border padding repeats the belt instead of inventing black corners
        ops.append(K.RandomAffine(
            degrees=cfg.rotate_deg, translate=(cfg.translate, cfg.translate),
            scale=(1 - cfg.scale, 1 + cfg.scale), shear=cfg.shear_deg or None,
            padding_mode="border", p=cfg.p))
    if cfg.brightness > 0:
        ops.append(K.RandomBrightness((1 - cfg.brightness, 1 + cfg.brightness), p=cfg.p))
    if cfg.contrast > 0:
        ops.append(K.RandomContrast((1 - cfg.contrast, 1 + cfg.contrast), p=cfg.p))
    if cfg.gamma > 0:
        ops.append(K.RandomGamma((1 - cfg.gamma, 1 + cfg.gamma), p=cfg.p))
    if cfg.blur_sigma > 0:
        ops.append(K.RandomGaussianBlur((5, 5), (0.1, cfg.blur_sigma), p=cfg.p / 2))
    if cfg.noise_std > 0:
        ops.append(K.RandomGaussianNoise(std=cfg.noise_std, p=cfg.p))
    if not ops:
        return None
    return K.AugmentationSequential(*ops, data_keys=["input"])
