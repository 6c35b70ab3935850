"""The fast path for a frozen backbone: its feature maps, computed once and reused.

A frozen backbone maps each eraser to the same feature map in every epoch and every trial
with that backbone, size and channels, so :func:`frozen_features` runs it once over the
erasers (and over their flips, the augmentation a frozen backbone can still use) and the
trial trains only the head on the cached maps: seconds per trial on a CPU instead of minutes.
:class:`FeatureCache` keeps the latest few sets for a process (a study's objective holds one).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from data.pipeline import Preprocessor

log = logging.getLogger(__name__)

FLIP_VIEWS = 4  # the eraser, mirrored left-right, top-bottom, and both (a half turn)


def flip_view(x: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (0..3) of a ``(B, C, S, S)`` batch: 0 as is, 1 and 2 mirrored, 3 both."""
    dims = [d for d, bit in ((3, 1), (2, 2)) if view & bit]
    return x.flip(dims) if dims else x


@torch.inference_mode()
def frozen_features(backbone: nn.Module, pre: Preprocessor, images: torch.Tensor,
                    rows: Sequence[int], *, views: int = 1, batch_size: int = 64,
                    dtype: torch.dtype = torch.float32,
                    autocast: Callable[[], object] | None = None) -> torch.Tensor:
    """``backbone.forward_features`` of ``images[rows]`` (uint8, on the backbone's device),
    preprocessed without augmentation: ``(len(rows), views, F, h, w)`` in ``dtype``."""
    backbone.eval()
    out = []
    rows_t = torch.as_tensor(list(rows), dtype=torch.long, device=images.device)
    for start in range(0, len(rows_t), batch_size):
        x = pre(images[rows_t[start:start + batch_size]], train=False)
        per_view = []
        for v in range(views):
            xv = flip_view(x, v).contiguous(memory_format=torch.channels_last)
            with autocast() if autocast else torch.autocast(x.device.type, enabled=False):
                per_view.append(backbone.forward_features(xv).to(dtype))
        out.append(torch.stack(per_view, dim=1))
    return torch.cat(out)


def _nbytes(value: torch.Tensor | tuple) -> int:
    return (sum(_nbytes(v) for v in value) if isinstance(value, tuple)
            else value.numel() * value.element_size())


class FeatureCache:
    """The feature sets computed in this process, by key, the least recently used dropped
    first once they hold more than ``max_bytes`` (a study's trials move between a few
    backbones, sizes and channel sets, and each set takes seconds to minutes to compute)."""

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, torch.Tensor | tuple] = OrderedDict()
        self.hits = 0

    def get(self, key: tuple, compute: Callable[[], torch.Tensor | tuple]
            ) -> torch.Tensor | tuple:
        """The features stored under ``key``, computing (and keeping) them on a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        value = compute()
        self._entries[key] = value
        while len(self._entries) > 1 and sum(map(_nbytes, self._entries.values())) > \
                self.max_bytes:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
