"""The eraser input format, implemented once: channel selection, resize and normalisation.

Every path that turns delivered ``uint8`` erasers into network input calls these functions:
the image cache (:func:`resize_uint8`), the training batches (``data.pipeline.Preprocessor``),
inference (:class:`model.InspectionModel`, :func:`preprocess_raw`) and so the ONNX graph. They
agree by construction, not by a test that keeps two copies in step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .channels import CHANNELS

WEIGHT_BITS = 12  # resize weights are multiples of 1/4096 ...
MID_BITS = 4  # ... and the first pass keeps 1/16 of a grey level (see resize)


def select_channels(x: Tensor, index: Tensor) -> Tensor:
    """Channels ``index`` (positions in :data:`~model.channels.CHANNELS`) of ``(B, 6, H, W)``."""
    return x.index_select(1, index)


def resize_weights(n_in: int, n_out: int, device: torch.device | None = None) -> Tensor:
    """``(n_out, n_in)`` integer weights, each row summing to ``2**WEIGHT_BITS``: antialiased
    bilinear resampling (a triangle filter, as wide as the scale when shrinking, PyTorch's
    ``antialias=True``), computed in exact integer arithmetic.

    Distances are counted in units of ``1 / (2 * n_out)`` input pixels, where both pixel
    centres and the filter's width are whole numbers, so that no rounding happens before the
    weights are quantised, and the quantisation itself is integer division.
    """
    j = torch.arange(n_in, device=device)
    i = torch.arange(n_out, device=device)
    distance = (2 * n_out * j[None, :] + n_out - (2 * i[:, None] + 1) * n_in).abs()
    tent = (2 * max(n_in, n_out) - distance).clamp(min=0)
    total = tent.sum(dim=1, keepdim=True)
    one = 1 << WEIGHT_BITS
    q = (2 * one * tent + total) // (2 * total)  # nearest multiple of 1/4096
    # what rounding left over goes to each row's largest weight: rows sum to exactly one
    largest = j[None, :] == q.argmax(dim=1, keepdim=True)
    return q + (one - q.sum(dim=1, keepdim=True)) * largest


def resize(x: Tensor, size: int) -> Tensor:
    """Resize a float ``(B, C, H, W)`` image on the uint8 grid (whole numbers 0..255) to
    ``size x size``, rounded back onto that grid.

    Antialiased bilinear with weights quantised to 1/4096 (:func:`resize_weights`), as two
    matrix products whose every partial sum is a whole number below 2**24: float32 holds them
    exactly, so PyTorch (any device, any summation order) and onnxruntime compute the same
    bits and the rounding to grey levels never depends on the library. (A plain
    ``F.interpolate`` left values within float error of a rounding boundary, where PyTorch and
    onnxruntime rounded apart by a grey level: 5e-4 on the probabilities of real erasers.)
    A no-op (no rounding) when the image already has that size; an exported graph
    (ONNX, ``.pt2``) always resizes instead, since at the same size the weights are the
    identity, and a branch on the input's size would tie the graph to one size.
    """
    if not torch.compiler.is_exporting() and x.shape[-2] == size and x.shape[-1] == size:
        return x
    rows = resize_weights(x.shape[-2], size, x.device).to(x.dtype)
    cols = resize_weights(x.shape[-1], size, x.device).to(x.dtype)
    # pass 1, along the width: at most 255 * 4096 (exact); keep 1/16 grey level (exact floor)
    shift = 1 << (WEIGHT_BITS - MID_BITS)
    y = torch.floor((x @ cols.T + shift / 2) / shift)
    # pass 2, along the height: at most 255 * 16 * 4096 < 2**24 (exact); nearest grey level
    scale = 1 << (WEIGHT_BITS + MID_BITS)
    return torch.floor((rows @ y + scale / 2) / scale).clamp(0, 255)


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
