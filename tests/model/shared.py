"""What the model tests share: a small three-channel network, its normalisation and
thresholds, and the network with BatchNorm statistics that are not the defaults."""

from __future__ import annotations

import torch

import model
from model.config import CNNConfig

CFG = CNNConfig(
    channels=("GRAY", "G", "NORMAL"),
    input_size=32,
    widths=(8, 16),
    kernel_sizes=(3, 5),
    convs_per_block=1,
    dense_width=8,
    task="multilabel",
)
MEAN = [0.41, 0.37, 0.52]
STD = [0.21, 0.19, 0.08]
THRESHOLDS = {"print_error": 0.4, "physical_error": 0.35, "no_defect": 0.6, "defect": 0.5}


def trained_net(cfg: CNNConfig = CFG) -> torch.nn.Module:
    torch.manual_seed(0)
    net = model.build_model(cfg)
    # A few train-mode passes so the BatchNorm running statistics are not the defaults.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, cfg.in_channels, cfg.input_size, cfg.input_size) * 2 + 0.5)
    return net.eval()
