"""The eraser input format, implemented once: channel selection, resize and normalisation.

Every path that turns delivered ``uint8`` erasers into network input calls these functions:
the image cache (:func:`resize_uint8`), the training batches (``data.pipeline.Preprocessor``),
inference (:class:`model.InspectionModel`, :func:`preprocess_raw`) and so the ONNX graph. They
agree by construction, not by a test that keeps two copies in step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .channels import CHANNELS

ROUND_OFFSET = 0.5 + 1 / 512  # rounding boundary just above the half (see resize)


def select_channels(x: Tensor, index: Tensor) -> Tensor:
    """Channels ``index`` (positions in :data:`~model.channels.CHANNELS`) of ``(B, 6, H, W)``."""
    return x.index_select(1, index)


def resize(x: Tensor, size: int) -> Tensor:
    """Resize a float ``(B, C, H, W)`` image in 0..255 to ``size x size``.

    Antialiased bilinear, then rounded and clamped back onto the uint8 grid, so that a cached
    uint8 copy and an on-the-fly resize give identical network inputs. A no-op (no rounding)
    when the image already has that size.
    """
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # Not x.round(): upsampling puts many pixels exactly halfway between two grey levels,
    # where the last bit of PyTorch's and onnxruntime's arithmetic decides the rounding (an
    # exported pretrained backbone was 1e-3 off). Moving the boundary off the half keeps
    # such exact ties on one side in both.
    return torch.floor(x + ROUND_OFFSET).clamp(0, 255)


def resize_uint8(images: np.ndarray | Tensor, size: int) -> Tensor:
    """:func:`resize` for a uint8 ``(B, C, H, W)`` batch, returned as uint8 (the cache's copy)."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.memmap) else images)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.clone() if isinstance(images, Tensor) else x
    return resize(x.float(), size).to(torch.uint8)


def to_unit(x: Tensor) -> Tensor:
    """uint8-grid values (0..255, any dtype) as float in [0, 1]."""
    return x.float() / 255


def normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x - mean) / std`` with ``mean``/``std`` shaped ``(1, C, 1, 1)`` in [0, 1] units."""
    return (x - mean) / std


def preprocess_raw(
    x_raw: Tensor, channel_index: Tensor, input_size: int, mean: Tensor, std: Tensor
) -> Tensor:
    """Raw ``(B, H, W, 6)`` uint8 (or float 0..255) -> normalised float ``(B, C, S, S)``.

    The order is fixed: permute, select channels, resize (only if the size differs), to
    [0, 1], normalise; the training path does the same steps on a cached resized copy.
    """
    if x_raw.ndim != 4 or x_raw.shape[-1] != len(CHANNELS):
        raise ValueError(
            f"expected raw images (B, H, W, {len(CHANNELS)}) in channel order "
            f"{list(CHANNELS)}, got shape {tuple(x_raw.shape)}"
        )
    x = select_channels(x_raw.permute(0, 3, 1, 2), channel_index)
    x = resize(x.float(), input_size)
    return normalise(to_unit(x), mean, std)
