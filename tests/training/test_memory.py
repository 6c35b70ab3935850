"""A patch model's memory bank (training.memory): good erasers' patches, distances that leave
an eraser's own patches out."""

from __future__ import annotations

import pytest
import torch

from training.memory import distance_maps, memory_bank


def maps(n=6, d=4, side=3, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, 1, d, side, side)


def test_the_bank_holds_patches_of_good_erasers_only():
    m = maps()
    good = torch.tensor([1, 4])
    bank, owner = memory_bank(m, good, size=10, seed=0)
    assert bank.shape == (10, 4) and set(owner.tolist()) <= {1, 4}
    patches = {tuple(p.tolist()) for i in (1, 4) for p in m[i, 0].permute(1, 2, 0).reshape(-1, 4)}
    assert all(tuple(row.tolist()) in patches for row in bank)
    again, _ = memory_bank(m, good, size=10, seed=0)
    assert torch.equal(bank, again)  # seeded
    more, _ = memory_bank(m, good, size=30, seed=0)  # 18 patches: some repeat
    assert more.shape == (30, 4)
    with pytest.raises(ValueError, match="labelled good"):
        memory_bank(m, torch.tensor([], dtype=torch.long), size=4, seed=0)


def test_an_erasers_own_patches_never_make_its_distance_zero():
    m = maps()
    good = torch.arange(6)
    bank, owner = memory_bank(m, good, size=54, seed=0)  # every patch is in the bank
    plain = distance_maps(m, bank)
    assert plain.shape == (6, 1, 1, 3, 3) and plain.max() < 1e-2  # float32 rounding
    left_out = distance_maps(m, bank, owner)
    assert left_out.min() > 0.1
