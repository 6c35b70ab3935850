"""Losses: hand-computed values, smoothing semantics, weights, invalid combinations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.losses import class_weight_from_targets, make_loss, pos_weight_from_targets


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_binary_bce_with_pos_weight_by_hand():
    loss = make_loss("binary", "bce", pos_weight=torch.tensor([3.0]))
    logits = t([[0.5], [-1.0]])
    targets = t([[0, 1], [0, 0]])  # defect = max(print, physical) -> [1, 0]
    expected = (-3 * math.log(_sig(0.5)) - math.log(1 - _sig(-1.0))) / 2
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    # A flat (B,) logit vector is accepted for the binary head too.
    assert loss(logits.reshape(-1), targets).item() == pytest.approx(expected, rel=1e-6)


def test_multilabel_bce_by_hand_and_against_torch():
    pw = torch.tensor([2.0, 0.5])
    loss = make_loss("multilabel", pos_weight=pw)
    logits = t([[1.0, -2.0], [0.0, 3.0]])
    targets = t([[1, 0], [0, 1]])
    by_hand = (
        -2 * math.log(_sig(1.0))
        - math.log(1 - _sig(-2.0))
        - math.log(1 - _sig(0.0))
        - 0.5 * math.log(_sig(3.0))
    ) / 4
    assert loss(logits, targets).item() == pytest.approx(by_hand, rel=1e-6)
    ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
    assert loss(logits, targets).item() == pytest.approx(ref.item(), rel=1e-6)


def test_symmetric_label_smoothing_targets():
    loss = make_loss("multilabel", label_smoothing=0.2)
    y = loss.soft_targets(t([[1, 0]]))
    assert torch.allclose(y, t([[0.9, 0.1]]))


def test_one_sided_smoothing_only_moves_negatives():
    loss = make_loss("multilabel", neg_smoothing=0.1)
    assert torch.allclose(loss.soft_targets(t([[1, 0], [0, 0]])), t([[1, 0.1], [0.1, 0.1]]))
    plain = make_loss("multilabel")
    logits = t([[0.3, -0.7]])
    # An all-positive sample is untouched ...
    pos = t([[1, 1]])
    assert loss(logits, pos).item() == pytest.approx(plain(logits, pos).item())
    # ... a negative output now fits sigmoid(z) = 0.1, by hand:
    neg = t([[1, 0]])
    d = 0.1
    expected = (
        -math.log(_sig(0.3)) - (d * math.log(_sig(-0.7)) + (1 - d) * math.log(1 - _sig(-0.7)))
    ) / 2
    assert loss(logits, neg).item() == pytest.approx(expected, rel=1e-6)


def test_binary_one_sided_smoothing_uses_defect():
    loss = make_loss("binary", neg_smoothing=0.2)
    assert torch.allclose(loss.soft_targets(t([[0, 1], [0, 0], [1, 0]])), t([[1], [0.2], [1]]))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_focal_with_gamma_zero_equals_bce(task):
    torch.manual_seed(0)
    n = 1 if task == "binary" else 2
    logits = torch.randn(8, n)
    targets = torch.randint(0, 2, (8, 2)).float()
    pw = torch.full((n,), 2.5)
    bce = make_loss(task, "bce", pos_weight=pw, label_smoothing=0.1)
    focal = make_loss(task, "focal", pos_weight=pw, focal_gamma=0.0, label_smoothing=0.1)
    assert focal(logits, targets).item() == pytest.approx(bce(logits, targets).item(), rel=1e-6)


def test_focal_by_hand():
    loss = make_loss("binary", "focal", focal_gamma=2.0)
    # z = 0 -> p = 0.5 for a positive: (1 - 0.5)^2 * ln 2
    assert loss(t([[0.0]]), t([[1, 0]])).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    # An easy example contributes far less than under BCE.
    easy_focal = loss(t([[4.0]]), t([[1, 0]])).item()
    easy_bce = make_loss("binary")(t([[4.0]]), t([[1, 0]])).item()
    assert easy_focal < 0.001 * easy_bce


@pytest.mark.parametrize("z", [40.0, 200.0])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradients_are_finite_when_saturated(z, gamma):
    # Saturated and right (1 - p_t == 0) on some outputs, saturated and wrong on others.
    cases = (
        ("binary", t([[z], [-z]]), t([[1, 0], [1, 1]])),
        ("multilabel", t([[z, -z], [-z, z]]), t([[1, 0], [1, 0]])),
        ("multiclass", t([[z, -z, -z, -z], [z, -z, -z, -z]]), t([[0, 0], [1, 1]])),
    )
    for task, logits, targets in cases:
        logits.requires_grad_(True)
        for smoothing in (0.0, 0.1):
            loss = make_loss(task, "focal", focal_gamma=gamma, neg_smoothing=smoothing)
            value = loss(logits, targets)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value), (task, smoothing)
            assert torch.isfinite(grad).all(), (task, smoothing)


def test_multiclass_ce_class_weights_by_hand():
    loss = make_loss("multiclass", "ce", class_weight=t([1.0, 2.0, 3.0, 4.0]))
    logits = torch.zeros(2, 4)  # p = 1/4 everywhere
    targets = t([[0, 1], [1, 1]])  # classes 0_1 (index 1) and 1_1 (index 3)
    # Mean over samples of w_y * -log p_y (not torch's division by the summed weights).
    assert loss(logits, targets).item() == pytest.approx((2 + 4) * math.log(4) / 2, rel=1e-6)


def test_multiclass_bce_alias_and_against_torch():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    targets = t([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [1, 0]])
    index = torch.tensor([0, 1, 2, 3, 0, 2])
    ref = F.cross_entropy(logits, index, label_smoothing=0.1)
    for kind in ("ce", "bce"):
        loss = make_loss("multiclass", kind, label_smoothing=0.1)
        assert loss(logits, targets).item() == pytest.approx(ref.item(), rel=1e-6)


def test_multiclass_one_sided_smoothing():
    loss = make_loss("multiclass", neg_smoothing=0.3)
    q = loss.soft_targets(t([[0, 0], [1, 0]]))
    assert torch.allclose(q, t([[0.7, 0.1, 0.1, 0.1], [0, 0, 1, 0]]))
    logits = t([[1.0, 0.0, -1.0, 0.5]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    expected = -(0.7 * log_p[0] + 0.1 * (log_p[1] + log_p[2] + log_p[3]))
    assert loss(logits, t([[0, 0]])).item() == pytest.approx(expected.item(), rel=1e-6)


def test_multiclass_focal_gamma_zero_equals_ce():
    torch.manual_seed(1)
    logits = torch.randn(5, 4)
    targets = torch.randint(0, 2, (5, 2)).float()
    cw = t([0.5, 1.5, 1.0, 1.0])
    ce = make_loss("multiclass", "ce", class_weight=cw, neg_smoothing=0.1)
    focal = make_loss("multiclass", "focal", class_weight=cw, neg_smoothing=0.1, focal_gamma=0)
    assert focal(logits, targets).item() == pytest.approx(ce(logits, targets).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("task", "kind", "n"),
    [("binary", "bce", 1), ("multilabel", "focal", 2), ("multiclass", "ce", 4)],
)
def test_zero_sample_weight_removes_the_sample(task, kind, n):
    torch.manual_seed(0)
    loss = make_loss(task, kind)
    logits = torch.randn(3, n)
    targets = t([[1, 0], [0, 0], [1, 1]])
    w = t([1.0, 0.0, 1.0])
    kept = torch.tensor([0, 2])
    assert loss(logits, targets, w).item() == pytest.approx(
        loss(logits[kept], targets[kept]).item(), rel=1e-6
    )
    # Uniform weights change nothing; all-zero weights give 0, not NaN.
    assert loss(logits, targets, torch.full((3,), 0.5)).item() == pytest.approx(
        loss(logits, targets).item(), rel=1e-6
    )
    assert loss(logits, targets, torch.zeros(3)).item() == 0.0


@pytest.mark.parametrize(
    ("task", "kind", "kwargs", "match"),
    [
        ("multiclass", "ce", {"pos_weight": torch.ones(4)}, "pos_weight"),
        ("multilabel", "bce", {"class_weight": torch.ones(4)}, "class_weight"),
        ("binary", "ce", {}, "invalid"),
        ("multiclass", "hinge", {}, "invalid"),
        ("regression", "bce", {}, "task"),
        ("binary", "bce", {"label_smoothing": 1.0}, "label_smoothing"),
        ("binary", "bce", {"neg_smoothing": -0.1}, "neg_smoothing"),
        ("binary", "focal", {"focal_gamma": -1.0}, "focal_gamma"),
        ("multilabel", "bce", {"pos_weight": torch.ones(3)}, "pos_weight"),
        ("multiclass", "ce", {"class_weight": torch.ones(2)}, "class_weight"),
    ],
)
def test_invalid_combinations(task, kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss(task, kind, **kwargs)


def test_bad_target_shape():
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        make_loss("binary")(torch.zeros(2, 1), torch.zeros(2))


def test_pos_weight_from_targets():
    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 0], [1, 1], [0, 0]])
    # print: 2 pos / 4 neg; physical: 2 pos / 4 neg; defect: 3 / 3
    assert torch.allclose(pos_weight_from_targets(targets, "multilabel"), t([2.0, 2.0]))
    assert torch.allclose(pos_weight_from_targets(targets, "binary", factor=0.5), t([0.5]))
    # No positives: nothing to balance, weight 1 (no division by zero).
    assert torch.allclose(pos_weight_from_targets(np.zeros((4, 2)), "multilabel"), t([1, 1]))
    with pytest.raises(ValueError, match="sigmoid"):
        pos_weight_from_targets(targets, "multiclass")


def test_class_weight_from_targets():
    # counts 0_0: 4, 0_1: 2, 1_0: 0, 1_1: 2 -> N/c = 2, 4, -, 4 -> mean 10/3 over present
    targets = np.array([[0, 0]] * 4 + [[0, 1]] * 2 + [[1, 1]] * 2)
    w = class_weight_from_targets(targets)
    assert torch.allclose(w, t([0.6, 1.2, 0.0, 1.2]))
    assert torch.allclose(class_weight_from_targets(targets, power=0.0), t([1, 1, 0, 1]))
    w_half = class_weight_from_targets(targets, power=0.5)
    assert w_half[2] == 0 and w_half[[0, 1, 3]].mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        class_weight_from_targets(np.zeros((0, 2)))


def test_loss_module_moves_weights_with_it():
    loss = make_loss("multilabel", pos_weight=torch.ones(2))
    assert "pos_weight" in dict(loss.named_buffers())
