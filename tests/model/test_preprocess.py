"""The one eraser input format: channel selection, resize, normalisation, raw preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.channels import CHANNELS
from model.preprocess import (
    WEIGHT_BITS,
    normalise,
    preprocess_raw,
    resize,
    resize_uint8,
    resize_weights,
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


def test_resize_to_another_size_lands_on_the_uint8_grid_next_to_pytorch_antialiased():
    x = _uint8((2, 3, 40, 40)).float()
    out = resize(x, 24)
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, out.round())
    assert out.min() >= 0 and out.max() <= 255
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    # the nearest grey level of PyTorch's antialiased bilinear, up to the weights' 1/4096 steps
    assert (out - ref).abs().max() <= 0.5 + 0.1
    assert (out != torch.floor(ref + 0.5)).float().mean() < 0.05
    up = resize(x, 48)  # upsampling too
    assert up.shape == (2, 3, 48, 48)
    ref = F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    assert (up - ref).abs().max() <= 0.5 + 0.1


@pytest.mark.parametrize(("n_in", "n_out"), [(310, 48), (310, 320), (32, 48), (37, 20), (5, 5)])
def test_resize_weights_are_whole_numbers_summing_to_one_in_every_row(n_in, n_out):
    w = resize_weights(n_in, n_out)
    assert w.shape == (n_out, n_in) and w.dtype == torch.int64
    assert (w >= 0).all()
    assert torch.equal(w.sum(dim=1), torch.full((n_out,), 2**WEIGHT_BITS))
    if n_in == n_out:
        assert torch.equal(w, torch.eye(n_in, dtype=torch.int64) * 2**WEIGHT_BITS)


def test_resize_is_exact_whatever_the_precision_or_the_order_of_the_sums():
    # Every partial sum is a whole number below 2**24, so float32 holds it exactly: float64,
    # and the sums taken in another order (a matrix product written out), give the very same
    # grey levels.
    x = _uint8((2, 3, 310, 310), seed=3).float()
    out = resize(x, 48)
    assert torch.equal(resize(x.double(), 48).float(), out)
    cols = resize_weights(310, 48).float()
    by_hand = sum(x[..., k:k + 1] * cols[:, k] for k in reversed(range(310)))
    assert torch.equal(by_hand, x @ cols.T)
    # the reason rounding needs this: PyTorch's own resize leaves values within float error of
    # the half, where two libraries can round apart
    ref = F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    assert ((ref - ref.floor() - 0.5).abs() < 1e-4).any()


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
