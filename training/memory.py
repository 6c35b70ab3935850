"""The memory bank of a patch model: patches of good training erasers, and every cached
patch's distance to it.

The bank is a random sample of the patches of the training erasers labelled good (PatchCore
picks a greedy coreset; on a CPU its cost grows with bank size x patches x features and ran
past a trial's share of the budget, while a random sample of a few thousand patches already
covers a product line that repeats one pattern). A few defective erasers labelled good slip
into it: their defect then counts as normal, the price of noisy labels, which the trained head
beside the distance can still see through.

A training eraser's patches must not meet themselves in the bank, or every good training
eraser would lie at distance zero and the head would learn a contrast that no new eraser
shows: each cached map's distances leave out its own eraser's patches (leave-one-out).
"""

from __future__ import annotations

import torch

from model.patch import nearest_distance

BATCH = 16  # erasers whose distances are computed at a time


def memory_bank(maps: torch.Tensor, good: torch.Tensor, size: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` patches of the erasers ``good`` (indices into ``maps``, ``(N, V, D, h, w)``,
    view 0): the bank ``(size, D)`` in float32 and each row's eraser ``(size,)``. With fewer
    patches than ``size`` some repeat (the model's bank has a fixed size)."""
    if len(good) == 0:
        raise ValueError("the memory bank needs erasers labelled good in the training part")
    _, _, d, h, w = maps.shape
    patches = maps[good, 0].permute(0, 2, 3, 1).reshape(-1, d)
    owner = good.repeat_interleave(h * w)
    gen = torch.Generator().manual_seed(seed)
    if len(patches) >= size:
        pick = torch.randperm(len(patches), generator=gen)[:size]
    else:
        pick = torch.randint(len(patches), (size,), generator=gen)
    pick = pick.to(patches.device)
    return patches[pick].float(), owner.to(patches.device)[pick]


def distance_maps(maps: torch.Tensor, bank: torch.Tensor,
                  owner: torch.Tensor | None = None) -> torch.Tensor:
    """Each patch's distance to its nearest bank row: ``(N, V, 1, h, w)`` for ``maps``
    ``(N, V, D, h, w)``. ``owner`` (the bank rows' erasers, as indices into ``maps``) leaves
    each eraser's own patches out; None for erasers that gave none (validation)."""
    n, v = maps.shape[:2]
    out = []
    for start in range(0, n, BATCH):
        rows = torch.arange(start, min(start + BATCH, n), device=maps.device)
        exclude = None if owner is None else owner[None, :] == rows[:, None]
        per_view = [nearest_distance(maps[rows, view], bank, exclude) for view in range(v)]
        out.append(torch.stack(per_view, dim=1))
    return torch.cat(out)
