"""CPU training-step speed: channels-last memory format, bf16 autocast and torch.compile
against today's step, on the networks the small rungs search.

    python -m bench.cpu_speed [--threads 1] [--steps 30]

For each network (the portfolio's 48 and 64 px GRAY+NORMAL CNNs, the split-stem six-channel
one, and a 96 px 4-block one) it times full training steps (forward, loss, backward, AdamW)
on random batches of 16, each variant in turn, A B A B, and prints ``RATIO`` lines: variant
speed over the plain float32 step (above 1.0x: faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from bench._common import machine, ratio_line, table
from cli.common import HelpFormatter
from model import CNNConfig, build_model

NETWORKS = {
    "gn48 3x16-64": CNNConfig(channels=("GRAY", "NORMAL"), input_size=48, widths=(16, 32, 64),
                              kernel_sizes=(3, 3, 3), dense_width=0),
    "gn64 3x16-64": CNNConfig(channels=("GRAY", "NORMAL"), input_size=64, widths=(16, 32, 64),
                              kernel_sizes=(3, 3, 3), dense_width=0),
    "all48 split": CNNConfig(input_size=48, widths=(16, 32, 64), kernel_sizes=(3, 3, 3),
                             dense_width=0, stem="split"),
    "gn96 4x16-128": CNNConfig(channels=("GRAY", "NORMAL"), input_size=96,
                               widths=(16, 32, 64, 128), kernel_sizes=(3,) * 4, dense_width=0),
}
VARIANTS = ("float32", "channels_last", "bf16_autocast", "compile")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_speed", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="A B A B rounds")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    return p


def make_step(cfg: CNNConfig, variant: str, batch: int):
    """A function running one training step of ``cfg`` the way ``variant`` says."""
    torch.manual_seed(0)
    net = build_model(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    y = torch.randint(0, 2, (batch, cfg.n_outputs)).float()
    if variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(net) if variant == "compile" else net

    def step() -> None:
        if variant == "bf16_autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = forward(x)
        else:
            logits = forward(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: first-use costs, compilation
        step()
    return step


def steps_per_second(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine  {machine()}")
    rows = []
    for name, cfg in NETWORKS.items():
        steps = {v: make_step(cfg, v, args.batch) for v in VARIANTS}
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                rates[v].append(steps_per_second(steps[v], args.steps))
        base = statistics.median(rates["float32"])
        rows.append([name, f"{base * args.batch:.0f}",
                     *(f"{statistics.median(rates[v]) / base:.2f}x" for v in VARIANTS[1:])])
        for v in VARIANTS[1:]:
            print(ratio_line(f"{name} {v} / float32 step", statistics.median(rates[v]) / base))
    print(table(rows, ["network", "float32 images/s", *VARIANTS[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
