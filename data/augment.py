"""Batched augmentation on the training device with kornia.

All six channels of an eraser are one object: geometric ops move them together, and intensity
ops run on [0, 1] floats before normalisation. Nothing mixes channels or assumes RGB (the
captures are separate illuminations, not colour planes). Every op draws its own random
parameters per sample.

The ops keep kornia's families, ranges and probabilities, but spend work only on the rows an
op applies to (kornia's ``Random*`` ops with p < 1 transform every row, then blend), flip and
turn by one exact pixel permutation instead of three warps, and draw noise on the batch's
device: ``bench/data_path.py`` measures this 3-4x faster than the plain kornia pipeline on a
CPU thread (see bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import kornia.augmentation as K
import kornia.enhance as KE
import torch
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


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (indices, factors) on ``device``; on CUDA through pinned memory,
    so that the copy is truly asynchronous and the host never waits for the GPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _drawn_rows(batch: int, p: float) -> torch.Tensor:
    """CPU indices of the rows an op with probability ``p`` applies to.

    Drawn on the CPU (from torch's global generator, like kornia's own parameters) so that
    selecting rows never waits for the GPU.
    """
    return (torch.rand(batch) < p).nonzero().squeeze(1)


class Dihedral(nn.Module):
    """Random flips and 90-degree turns of square batches, as one exact pixel permutation.

    The same distribution as kornia's ``RandomHorizontalFlip()``, ``RandomVerticalFlip()``
    (p=0.5 each) and ``RandomRotation90(times=(0, 3), p=p_turn)`` in that order, which warp
    every row with bilinear sampling and then blend, three times; here one ``gather`` moves
    each row's pixels to where the drawn element of the 8 flips/turns puts them.
    """

    copies = True  # returns a new tensor: later in-place ops never touch the caller's batch

    def __init__(self, p_turn: float):
        super().__init__()
        self.p_turn = p_turn
        self._perms: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _permutations(self, side: int, device: torch.device) -> torch.Tensor:
        """``(8, side * side)`` source pixel of each target pixel, per element 4 * flip + turns."""
        key = (side, device)
        if key not in self._perms:
            grid = torch.arange(side * side).view(side, side)
            self._perms[key] = torch.stack([
                torch.rot90(grid.flip(-1) if flip else grid, turns, dims=(-2, -1)).reshape(-1)
                for flip in (0, 1) for turns in range(4)]).to(device)
        return self._perms[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h != w:
            raise ValueError(f"flips and turns need square images, not {h}x{w}")
        flip_h = torch.rand(b) < 0.5
        flip_v = torch.rand(b) < 0.5
        k = torch.randint(0, 4, (b,)) * (torch.rand(b) < self.p_turn)
        # A vertical flip is a horizontal one followed by two turns, so "h, then v, then k
        # turns" is "a horizontal flip if h xor v, then k + 2v turns": one of 8 elements.
        code = (flip_h ^ flip_v).long() * 4 + (k + 2 * flip_v.long()) % 4
        src = self._permutations(h, x.device)[_to(code, x.device)]
        return x.reshape(b, c, h * w).gather(2, src.unsqueeze(1).expand(b, c, h * w)).view(
            b, c, h, w)


class Intensity(nn.Module):
    """Brightness (additive), contrast (multiplicative) and gamma, each with probability p.

    Brightness and contrast make one pass over the batch with per-sample factors (the identity
    for rows the op skips) through kornia.enhance; kornia's ``Random*`` ops with p < 1 instead
    transform every row and then blend the skipped ones back. Gamma, the costly one (a
    ``pow``), runs on the drawn rows only.
    """

    copies = True

    def __init__(self, brightness: float, contrast: float, gamma: float, p: float):
        super().__init__()
        self.brightness, self.contrast, self.gamma, self.p = brightness, contrast, gamma, p

    def _factors(self, b: int, spread: float, identity: float) -> torch.Tensor:
        drawn = identity + (torch.rand(b) * 2 - 1) * spread
        return torch.where(torch.rand(b) < self.p, drawn, torch.full((b,), identity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.brightness > 0:
            x = KE.adjust_brightness(x, _to(self._factors(b, self.brightness, 0.0), x.device))
        if self.contrast > 0:
            x = KE.adjust_contrast(x, _to(self._factors(b, self.contrast, 1.0), x.device))
        if self.gamma > 0:
            if self.brightness == self.contrast == 0:
                x = x.clone()  # the pow below works in place
            idx = _drawn_rows(b, self.p)
            if len(idx):
                gamma = (1 + (torch.rand(len(idx)) * 2 - 1) * self.gamma).view(-1, 1, 1, 1)
                idx, gamma = _to(idx, x.device), _to(gamma, x.device)
                x.index_copy_(0, idx, x.index_select(0, idx).pow_(gamma))
        return x


class GaussianNoise(nn.Module):
    """Adds N(0, std) noise to rows drawn with probability p, in place, drawing the noise on
    the batch's device and only for those rows (kornia's op draws it for every row)."""

    copies = False

    def __init__(self, std: float, p: float):
        super().__init__()
        self.std, self.p = std, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = _drawn_rows(x.shape[0], self.p)
        if len(idx):
            noise = torch.randn((len(idx), *x.shape[1:]), device=x.device, dtype=x.dtype)
            x.index_add_(0, _to(idx, x.device), noise.mul_(self.std))
        return x


class OnRows(nn.Module):
    """Applies ``op`` (a kornia augmentation built with p=1) to rows drawn with probability
    ``p``, in place.

    kornia with p < 1 computes the op on every row and then blends the skipped rows back;
    computing it only on the drawn rows does the same with a fraction of the work (half at
    p=0.5), which is what matters for the warps and the blur.
    """

    copies = False

    def __init__(self, op: nn.Module, p: float):
        super().__init__()
        self.op, self.p = op, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = _drawn_rows(x.shape[0], self.p)
        if len(idx) == x.shape[0]:
            return self.op(x)
        if len(idx):
            idx = _to(idx, x.device)
            x.index_copy_(0, idx, self.op(x.index_select(0, idx)))
        return x


class Augmenter(nn.Module):
    """The ops of one :class:`AugmentConfig`, in order; the caller's batch is never modified."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ops[0].copies:
            x = x.clone()  # the later ops may work in place
        for op in self.ops:
            x = op(x)
        return x


def build_augmenter(cfg: AugmentConfig) -> nn.Module | None:
    """Batched augmentation of ``(B, C, S, S)`` float batches in [0, 1] (square), or None if
    all off. Every op draws its parameters per sample; see bench/RESULTS.md for its speed."""
    ops: list[nn.Module] = []
    if cfg.flips:
        ops.append(Dihedral(cfg.p))
    if max(cfg.rotate_deg, cfg.translate, cfg.scale, cfg.shear_deg) > 0:
        # border padding repeats the belt instead of inventing black corners
        ops.append(OnRows(K.RandomAffine(
            degrees=cfg.rotate_deg, translate=(cfg.translate, cfg.translate),
            scale=(1 - cfg.scale, 1 + cfg.scale), shear=cfg.shear_deg or None,
            padding_mode="border", p=1.0), cfg.p))
    if max(cfg.brightness, cfg.contrast, cfg.gamma) > 0:
        ops.append(Intensity(cfg.brightness, cfg.contrast, cfg.gamma, cfg.p))
    if cfg.blur_sigma > 0:
        ops.append(OnRows(K.RandomGaussianBlur((5, 5), (0.1, cfg.blur_sigma), p=1.0),
                          cfg.p / 2))
    if cfg.noise_std > 0:
        ops.append(GaussianNoise(cfg.noise_std, cfg.p))
    if not ops:
        return None
    return Augmenter(ops)
