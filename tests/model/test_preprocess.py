"""The one eraser input format: channel selection, resize, normalisation, raw preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.channels import CHANNELS
from model.preprocess import (
    ROUND_OFFSET,
    normalise,
    preprocess_raw,
    resize,
    resize_uint8,
    select_channels,
    to_unit,
)


def _uint8(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def test_resize_is_a_no_op_without_rounding_at_the_same_size():
    x = torch.rand(2, 3, 16, 16) * 255  # off the uint8 grid on purpose
    out = resize(x, 16)
    assert torch.equal(out, x)
    assert not torch.equal(out, out.round())  # nothing was rounded


def test_resize_to_another_size_lands_on_the_uint8_grid():
    x = torch.rand(2, 3, 40, 40) * 255
    out = resize(x, 24)
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, out.round())
    assert out.min() >= 0 and out.max() <= 255
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    # nearest grey level, halves up (see the next test)
    torch.testing.assert_close(out, torch.floor(ref + ROUND_OFFSET).clamp(0, 255))
    assert (out - ref).abs().max() <= 0.5 + 1 / 512
    # upsampling too
    assert resize(x, 48).shape == (2, 3, 48, 48)


def test_resize_uint8_returns_uint8_equal_to_resize_of_the_float_image():
    x = _uint8((3, 6, 37, 37))
    out = resize_uint8(x, 20)
    assert out.dtype == torch.uint8 and out.shape == (3, 6, 20, 20)
    assert torch.equal(out.float(), resize(x.float(), 20))
    # numpy input (and a memmap-like ndarray) gives the same
    assert torch.equal(resize_uint8(x.numpy(), 20), out)


def test_resize_uint8_at_the_same_size_copies_a_tensor():
    x = _uint8((2, 6, 8, 8))
    out = resize_uint8(x, 8)
    assert out.dtype == torch.uint8 and torch.equal(out, x)
    out[0, 0, 0, 0] = 255 - int(x[0, 0, 0, 0])
    assert not torch.equal(out, x), "the caller's tensor must not be shared"


def test_select_channels_picks_positions_in_order():
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 3, 3)
    out = select_channels(x, torch.tensor([5, 0, 2]))
    assert out.shape == (2, 3, 3, 3)
    assert out[:, :, 0, 0].tolist() == [[5.0, 0.0, 2.0]] * 2


def test_to_unit_and_normalise():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    unit = to_unit(x)
    assert unit.dtype == torch.float32
    torch.testing.assert_close(unit.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    mean = torch.tensor([0.5, 0.2, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.1, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalise(unit, mean, std).flatten(),
                               torch.tensor([-1.0, 0.0, 0.5]))


def test_preprocess_raw_matches_the_steps_written_out():
    raw = _uint8((2, 50, 50, 6), seed=1)
    idx = torch.tensor([0, 5])
    mean = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1)
    std = torch.tensor([0.2, 0.1]).view(1, 2, 1, 1)
    out = preprocess_raw(raw, idx, 32, mean, std)
    assert out.shape == (2, 2, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    x = raw.numpy()[..., [0, 5]].transpose(0, 3, 1, 2).astype(np.float32)
    x = resize(torch.from_numpy(x), 32) / 255
    torch.testing.assert_close(out, (x - mean) / std, rtol=0, atol=0)
    # float input in 0..255 gives the same
    assert torch.equal(preprocess_raw(raw.float(), idx, 32, mean, std), out)


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (2, 6, 16, 16), (16, 16, 6)])
def test_preprocess_raw_rejects_a_wrong_layout_naming_the_expected_one(shape):
    one = torch.ones(1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"\(B, H, W, 6\)") as exc:
        preprocess_raw(torch.zeros(shape, dtype=torch.uint8), torch.tensor([0]), 8, one, one)
    assert str(list(CHANNELS)) in str(exc.value) and str(shape) in str(exc.value)


def test_exact_halves_round_up_whatever_the_last_bit():
    # Doubling a 2-px row by bilinear interpolation puts pixels exactly between 10 and 11
    # (10.25, 10.75 at the quarter points, the midpoint elsewhere); the rounding of a value
    # one float step either side of a half must agree with the exact half, or onnxruntime's
    # and PyTorch's last bits pick different grey levels.
    halves = torch.tensor([10.5, 10.5 - 2e-6, 10.5 + 2e-6, 254.5 - 3e-5])
    assert torch.equal(torch.floor(halves + ROUND_OFFSET), torch.tensor([11.0, 11.0, 11.0, 255.0]))
    x = torch.tensor([[[[10.0, 11.0], [10.0, 11.0]]]])
    out = resize(x, 4)
    assert out.shape == (1, 1, 4, 4) and set(out.unique().tolist()) <= {10.0, 11.0}
