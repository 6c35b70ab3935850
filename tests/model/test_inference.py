"""InspectionModel (network + the input format) and predict: shapes, preprocessing, TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from model.config import CHANNELS
from model.inference import InspectionModel, predict
from model.metrics import probabilities
from model.preprocess import resize_weights
from tests.model.shared import CFG, MEAN, STD, THRESHOLDS, trained_net


def _raw(n: int = 5, size: int = 310, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 6), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def m() -> InspectionModel:
    return InspectionModel(trained_net(), CFG, MEAN, STD, THRESHOLDS).eval()


def test_forward_shapes_and_probabilities(m):
    with torch.no_grad():
        cls, defect = m(_raw(4, size=64, seed=1))
    assert cls.shape == (4, 3) and defect.shape == (4,)
    assert torch.isfinite(cls).all() and torch.isfinite(defect).all()
    assert ((cls >= 0) & (cls <= 1)).all() and ((defect >= 0) & (defect <= 1)).all()
    assert m.task == "multilabel" and m.thresholds == THRESHOLDS and m.meta == {}


def test_every_trainable_parameter_gets_a_gradient_through_the_raw_input():
    net = model.build_model(CFG)
    wrapped = InspectionModel(net, CFG, MEAN, STD).train()
    cls, defect = wrapped(_raw(4, size=40, seed=5))
    (cls.sum() + defect.sum()).backward()
    for name, p in wrapped.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    # the normalisation is a buffer, not something an optimiser would move
    assert {n for n, _ in wrapped.named_buffers()} >= {"mean", "std", "channel_index"}


def test_model_equals_manual_preprocessing_on_310(m):
    raw = _raw(3, size=310, seed=2)
    idx = [CHANNELS.index(c) for c in CFG.channels]
    # Written out independently of preprocess_raw: channels first, then NCHW.
    x = raw.numpy()[..., idx].astype(np.float64).transpose(0, 3, 1, 2)
    w = resize_weights(310, 32).numpy().astype(np.float64)  # multiples of 1/4096, see resize
    x = np.floor((x @ w.T + 128) / 256)  # along the width, to 1/16 grey level
    x = np.floor((w @ x + 2**15) / 2**16)  # along the height, to the nearest grey level
    x = torch.from_numpy(x).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(m.preprocess(raw), x)
        p = probabilities(m.net(x), "multilabel")
        cls, defect = m(raw)
    assert torch.equal(cls, p[:, :3]) and torch.equal(defect, p[:, 3])
    # Float input in 0..255 is accepted and gives the same result.
    with torch.no_grad():
        assert torch.equal(m(raw.float())[0], cls)


def test_no_resize_when_already_at_input_size(m):
    raw = _raw(2, size=32)
    x = raw[..., [0, 2, 5]].permute(0, 3, 1, 2).float() / 255
    expected = (x - m.mean) / m.std
    assert torch.equal(m.preprocess(raw), expected)


def test_normalisation_values_are_checked():
    net = model.build_model(CFG)
    with pytest.raises(ValueError, match="3 mean and std values"):
        InspectionModel(net, CFG, [0.5] * 6, [0.2] * 6)
    with pytest.raises(ValueError, match="positive"):
        InspectionModel(net, CFG, MEAN, [0.2, 0.0, 0.1])


def test_predict(m):
    raw = _raw(7, size=48, seed=3)
    probs = predict(m, raw.numpy(), batch_size=3)
    assert probs.shape == (7, 4) and probs.dtype == np.float32
    assert np.isfinite(probs).all()
    with torch.no_grad():
        cls, defect = m(raw)
    assert np.allclose(probs, torch.cat([cls, defect[:, None]], 1).numpy(), atol=1e-6)
    m.train()
    try:
        predict(m, raw[:2])
        assert m.training  # the caller's mode is restored
    finally:
        m.eval()
    with pytest.raises(ValueError, match="6"):
        predict(m, raw[..., :3])
    with pytest.raises(ValueError, match="batch_size"):
        predict(m, raw, batch_size=0)


def test_tta_is_invariant_to_flips_and_rotations(m):
    raw = _raw(3, size=40, seed=4)
    base = predict(m, raw, tta=True)
    for view in (
        torch.flip(raw, dims=(2,)),
        torch.flip(raw, dims=(1,)),
        torch.rot90(raw, 1, dims=(1, 2)),
    ):
        assert np.allclose(predict(m, view, tta=True), base, atol=1e-6)
    # ... while a plain prediction does change under a flip (so the test is not vacuous).
    assert not np.allclose(predict(m, torch.flip(raw, dims=(2,))), predict(m, raw), atol=1e-6)
