"""From cached uint8 erasers to normalised training batches, on the training device.

The fast path keeps the whole ``(N, 6, S, S)`` uint8 tensor on the device and builds each
batch by indexing it: no per-sample Python, no host-to-device copy per step, augmentation
batched by kornia. :class:`EraserDataset` offers the same samples through the standard
``Dataset``/``DataLoader`` protocol; both go through :class:`Preprocessor`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from data.augment import AugmentConfig, build_augmenter
from data.dataset import EraserSet, class_codes
from data.split import Split
from model.channels import CHANNELS
from model.preprocess import normalise, select_channels, to_unit


def channel_stats(images: np.ndarray | torch.Tensor,
                  channels: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units; pass the training split only. Computed on
    the images' own device."""
    x = torch.as_tensor(images)[:, list(channels)]
    n = x.shape[0] * x.shape[2] * x.shape[3]
    # accumulate in float64 over chunks: exact enough, and no float copy of the whole set
    s = torch.zeros(len(channels), dtype=torch.float64, device=x.device)
    s2 = torch.zeros(len(channels), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], 256):
        chunk = x[start:start + 256].to(torch.float64)
        s += chunk.sum(dim=(0, 2, 3))
        s2 += (chunk * chunk).sum(dim=(0, 2, 3))
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    return (mean / 255).tolist(), (std / 255).clamp_min(1e-3).tolist()


class Preprocessor(nn.Module):
    """uint8 ``(B, 6, S, S)`` -> selected channels -> [0, 1] -> augment (train) -> normalise."""

    def __init__(self, channels: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 augment: AugmentConfig | None = None):
        super().__init__()
        self.register_buffer("channels", torch.tensor(list(channels), dtype=torch.long))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.augmenter = build_augmenter(augment) if augment is not None else None

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        # model.preprocess's steps, as inference takes them (the resize was the cache's)
        x = to_unit(select_channels(x, self.channels))
        if train and self.augmenter is not None:
            x = self.augmenter(x).clamp_(0.0, 1.0)
        return normalise(x, self.mean, self.std)


def balanced_weights(codes: Sequence[str]) -> torch.Tensor:
    """Sampling weight per eraser so that every ``X_Y`` class is drawn equally often."""
    values, inverse, counts = np.unique(np.asarray(codes), return_inverse=True,
                                        return_counts=True)
    del values
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)


def to_device(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a uint8 image tensor to ``device`` once (pinned, non-blocking on CUDA)."""
    device = torch.device(device)
    images = torch.as_tensor(images)
    if images.device == device:
        return images
    if device.type == "cuda" and images.device.type == "cpu":
        images = images.pin_memory()
    return images.to(device, non_blocking=True)


class DeviceBatches:
    """Batches of ``rows`` of a device-resident uint8 tensor.

    ``images`` stays uint8 on the device (4x smaller than float) and may hold more erasers
    than are trained on (the whole set, shared by every trial of a study); only the batch in
    use is converted to float. ``sampling`` is ``shuffle`` or ``balanced`` (each ``X_Y``
    class drawn equally often, with replacement).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, targets: np.ndarray,
                 device: torch.device | str, *, batch_size: int,
                 rows: Sequence[int] | None = None, sampling: str = "shuffle",
                 codes: Sequence[str] | None = None, seed: int = 0):
        if sampling not in ("shuffle", "balanced"):
            raise ValueError(f"unknown sampling {sampling!r}: shuffle or balanced")
        if sampling == "balanced" and codes is None:
            raise ValueError("balanced sampling needs the X_Y codes of the rows")
        self.device = torch.device(device)
        self.images = to_device(images, self.device)
        n = len(self.images) if rows is None else len(rows)
        self.rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self.rows = self.rows.to(self.device)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32).to(self.device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.weights = balanced_weights(codes) if sampling == "balanced" else None

    def __len__(self) -> int:
        return len(self.rows)

    def epoch(self, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]]:
        """Yields ``(positions, uint8 batch, targets)``; ``positions`` index into ``rows``.

        The last partial batch is kept: with a few hundred erasers every one counts.
        """
        n = len(self.rows)
        if not shuffle:
            order = torch.arange(n)
        elif self.weights is not None:
            order = torch.multinomial(self.weights, n, replacement=True,
                                      generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator)
        order = order.to(self.device)
        for start in range(0, n, self.batch_size):
            pos = order[start:start + self.batch_size]
            idx = self.rows[pos]
            yield pos, self.images[idx], self.targets[idx]


class EraserDataset(Dataset):
    """The standard-protocol twin of :class:`DeviceBatches` (for DataLoader users).

    Yields ``(float (C, S, S), targets (2,))`` prepared by the same :class:`Preprocessor`, so
    without augmentation both paths give identical tensors.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, targets: np.ndarray,
                 preprocessor: Preprocessor, train: bool = False):
        self.images = torch.as_tensor(images)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.preprocessor = preprocessor
        self.train = train

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocessor(self.images[i:i + 1], train=self.train)[0]
        return x, self.targets[i]


class TrainData:
    """The erasers of one split at one input size, ready for any number of runs.

    ``images`` holds the whole set (possibly already on the training device, shared by all
    trials); the split picks rows. Channel statistics come from the training rows only.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, targets: np.ndarray,
                 ids: Sequence[str], train_ids: Sequence[str], val_ids: Sequence[str],
                 flagged: Sequence[str] = ()):
        row = {k: i for i, k in enumerate(ids)}
        self.images = images
        self.targets = np.asarray(targets)
        self.train_rows = np.array([row[k] for k in train_ids], dtype=np.int64)
        self.val_rows = np.array([row[k] for k in val_ids], dtype=np.int64)
        self.val_ids = list(val_ids)
        self.train_codes = class_codes(self.targets[self.train_rows])
        flagged_set = set(flagged)
        self.train_flagged = np.array([k in flagged_set for k in train_ids], dtype=bool)
        # on the images' own device: no copy of the training rows back to the host
        tensor = torch.as_tensor(images)
        rows = torch.as_tensor(self.train_rows, device=tensor.device)
        self.mean6, self.std6 = channel_stats(tensor[rows], range(len(CHANNELS)))

    @classmethod
    def from_split(cls, data: EraserSet, split: Split, size: int, *, fold: int = 0,
                   device: str | torch.device = "cpu", flagged: Sequence[str] = ()) -> TrainData:
        images = to_device(data.images(size), device)
        return cls(images, data.targets, data.ids, split.train_ids(fold), split.val_ids(fold),
                   flagged)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])
