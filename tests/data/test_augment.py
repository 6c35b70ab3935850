"""Batched augmentation (data.augment): configs, the ops, and kornia's distributions."""

from __future__ import annotations

from collections import Counter

import kornia.augmentation as K
import pytest
import torch

from data.augment import (
    AugmentConfig,
    Augmenter,
    Dihedral,
    GaussianNoise,
    Intensity,
    OnRows,
    build_augmenter,
)


def test_augmenter_keeps_shape_and_moves_channels_together():
    torch.manual_seed(0)
    aug = build_augmenter(AugmentConfig.from_strength(1.0, 0.0))
    # the same picture in every channel stays the same picture in every channel
    plane = torch.rand(8, 1, 24, 24)
    out = aug(plane.repeat(1, 6, 1, 1))
    assert out.shape == (8, 6, 24, 24)
    for c in range(1, 6):
        torch.testing.assert_close(out[:, c], out[:, 0])
    assert not torch.allclose(out[:, 0:1], plane)


def test_no_augmentation_config():
    assert build_augmenter(AugmentConfig.none()) is None
    assert not AugmentConfig.none().enabled and AugmentConfig().enabled
    cfg = AugmentConfig.from_strength(0.5, 0.5)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


def test_strength_knobs_map_onto_the_ops():
    geometric = AugmentConfig.from_strength(1.0, 0.0, flips=False)
    assert geometric.rotate_deg == 20.0 and geometric.brightness == 0.0
    assert geometric.blur_sigma == 0.0 and geometric.noise_std == 0.0
    photometric = AugmentConfig.from_strength(0.0, 1.0, flips=False)
    assert photometric.rotate_deg == 0.0 and photometric.blur_sigma == pytest.approx(1.2)
    assert AugmentConfig.from_strength(0.0, 0.4).blur_sigma == 0.0  # blur only from 0.5 up
    kinds = [type(op).__name__ for op in build_augmenter(photometric).ops]
    assert kinds == ["Intensity", "OnRows", "GaussianNoise"]
    flips_only = AugmentConfig.from_strength(0.0, 0.0)
    assert flips_only.enabled
    assert [type(op) for op in build_augmenter(flips_only).ops] == [Dihedral]


def test_dihedral_needs_square_images_and_only_permutes_pixels():
    with pytest.raises(ValueError, match="square"):
        Dihedral(0.5)(torch.rand(2, 6, 8, 10))
    torch.manual_seed(0)
    x = torch.rand(16, 6, 8, 8)
    out = Dihedral(1.0)(x)
    assert out.shape == x.shape and out.data_ptr() != x.data_ptr()
    # every row holds exactly its own pixel values, rearranged
    torch.testing.assert_close(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_intensity_and_noise_at_p_zero_change_nothing():
    torch.manual_seed(0)
    x = torch.rand(8, 6, 8, 8)
    torch.testing.assert_close(Intensity(0.2, 0.2, 0.2, p=0.0)(x), x)
    torch.testing.assert_close(GaussianNoise(0.1, p=0.0)(x.clone()), x)
    noisy = GaussianNoise(0.1, p=1.0)(x.clone())
    assert (noisy != x).flatten(1).any(1).all()  # p=1: every row gets noise
    assert torch.isfinite(noisy).all()


# The faster augmentation the data-path benchmark (bench/data_path.py) led to.


def _d4_element(out: torch.Tensor, base: torch.Tensor) -> int:
    for f in (0, 1):
        for k in range(4):
            t = torch.rot90(base.flip(-1) if f else base, k, (-2, -1))
            if torch.equal(out, t):
                return 4 * f + k
    return -1


def test_dihedral_matches_kornias_flips_and_turns():
    torch.manual_seed(0)
    base = torch.arange(16.0).view(1, 1, 4, 4)
    x = base.repeat(4000, 2, 1, 1)
    ref = K.AugmentationSequential(K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
                                   K.RandomRotation90(times=(0, 3), p=0.5))
    ours = Counter(_d4_element(o[:1], base[0]) for o in Dihedral(0.5)(x))
    theirs = Counter(_d4_element(o[:1].round(), base[0]) for o in ref(x))
    assert -1 not in ours and set(ours) == set(range(8))
    for e in range(8):  # same distribution over the 8 flips/turns (4000 draws each)
        assert abs(ours[e] - theirs[e]) / 4000 < 0.04, (e, ours, theirs)


def test_ops_touch_only_drawn_rows_and_never_the_callers_batch():
    torch.manual_seed(0)
    x = torch.rand(64, 6, 8, 8)
    before = x.clone()
    out = OnRows(K.RandomGaussianBlur((3, 3), (1.0, 1.0), p=1.0), 0.5)(x.clone())
    changed = (out != before).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54  # about half the rows
    aug = build_augmenter(AugmentConfig.from_strength(1.0, 1.0))
    assert isinstance(aug, Augmenter)
    y = aug(x)
    assert torch.equal(x, before) and y.shape == x.shape
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    assert torch.equal(a, aug(x))  # seeded: a trial replays exactly
