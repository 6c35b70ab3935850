"""A ready-to-run inspection model that takes the raw delivered arrays.

:class:`InspectionModel` bundles the network with its preprocessing, so that a user (or the
ONNX export) feeds it ``uint8`` images ``(B, H, W, 6)`` exactly as delivered. The resize and
normalisation are :mod:`model.preprocess`'s, the ones training uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .channels import CHANNELS, channel_indices
from .config import ArchConfig
from .metrics import PROB_NAMES, probabilities
from .preprocess import preprocess_raw

log = logging.getLogger(__name__)


class InspectionModel(nn.Module):
    """Network + preprocessing; ``forward`` maps raw images to class and defect probabilities.

    Attributes: ``net`` (the CNN), ``cfg``, ``thresholds`` (dict per :data:`PROB_NAMES`), and
    ``meta`` (the checkpoint minus its ``state_dict``; empty when built in memory).
    """

    def __init__(
        self,
        net: nn.Module,
        cfg: ArchConfig,
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg
        n = cfg.in_channels
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != n or std_t.numel() != n:
            raise ValueError(
                f"normalisation needs {n} mean and std values (one per channel "
                f"{list(cfg.channels)}), got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"normalisation std must be positive, got {std_t.tolist()}")
        self.register_buffer("channel_index", torch.tensor(channel_indices(cfg.channels)))
        self.register_buffer("mean", mean_t.reshape(1, n, 1, 1))
        self.register_buffer("std", std_t.reshape(1, n, 1, 1))
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.meta: dict = {}

    @property
    def task(self) -> str:
        """Head type of the wrapped network."""
        return self.cfg.task

    def preprocess(self, x_raw: Tensor) -> Tensor:
        """Raw ``(B, H, W, 6)`` -> normalised float ``(B, C, S, S)`` on the model's device."""
        return preprocess_raw(
            x_raw.to(self.mean.device),
            self.channel_index,
            self.cfg.input_size,
            self.mean,
            self.std,
        )

    def logits(self, x: Tensor) -> Tensor:
        """Head logits ``(B, n_outputs)`` for an already preprocessed batch."""
        return self.net(x)

    def probs(self, x_raw: Tensor) -> Tensor:
        """``(B, 4)`` probabilities in :data:`PROB_NAMES` order for raw images."""
        return probabilities(self.logits(self.preprocess(x_raw)), self.cfg.task)

    def forward(self, x_raw: Tensor) -> tuple[Tensor, Tensor]:
        """``(class_probs (B, 3) in GRADED order, defect_prob (B,))`` for raw images."""
        p = self.probs(x_raw)
        return p[:, :3], p[:, 3]


def _dihedral(x: Tensor, k: int) -> Tensor:
    """The ``k``-th (0..7) of the 8 flips/90-degree rotations of ``(B, H, W, C)`` images."""
    if k >= 4:
        x = torch.flip(x, dims=(2,))
    return torch.rot90(x, k % 4, dims=(1, 2)) if k % 4 else x


def predict(
    model: InspectionModel,
    images: np.ndarray | Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Probabilities ``(N, 4)`` in :data:`PROB_NAMES` order for raw images ``(N, H, W, 6)``.

    Runs in eval mode under ``torch.inference_mode()`` (the model's train/eval flag is restored
    afterwards). ``device`` moves the model there (in place) first; by default the model's
    current device is used. With ``tta=True`` the probabilities are averaged over the 8
    dihedral transforms (flips and 90-degree rotations) of each image.
    """
    if images.ndim != 4 or images.shape[-1] != len(CHANNELS):
        raise ValueError(
            f"expected images (N, H, W, {len(CHANNELS)}), got shape {tuple(images.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model.to(device)
    dev = model.mean.device
    n_views = 8 if tta else 1
    was_training = model.training
    model.eval()
    out = np.empty((images.shape[0], len(PROB_NAMES)), dtype=np.float32)
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                chunk = images[start : start + batch_size]
                if isinstance(chunk, np.ndarray):
                    chunk = torch.from_numpy(np.ascontiguousarray(chunk))
                x = chunk.to(dev, non_blocking=True)
                acc = model.probs(x)
                for k in range(1, n_views):
                    acc = acc + model.probs(_dihedral(x, k))
                out[start : start + len(x)] = (acc / n_views).float().cpu().numpy()
    finally:
        model.train(was_training)
    log.debug("predicted %d images (tta=%s) on %s", images.shape[0], tta, dev)
    return out
