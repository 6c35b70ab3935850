"""Data path: our batched path versus the usual per-sample Dataset/DataLoader path.

Ours: the cached uint8 tensor ``(N, 6, S, S)`` in memory (on the training device in a real
run), batches by indexing it (``data.DeviceBatches``), and ``data.Preprocessor`` converting,
augmenting (kornia, batched) and normalising each batch.

Baseline: what a PyTorch user typically writes: a ``Dataset`` that ``np.load``s each
``<ID>.npy`` from disk every epoch, resizes 310 -> S and applies per-sample transforms of the
same families (flips, 90-degree turns, small affine, brightness/contrast/gamma, blur, noise)
with ``torchvision.transforms.v2`` on the 6-channel tensor, batched by a ``DataLoader`` with 0
and 2 worker processes. Both produce the same ``float32 (B, 6, S, S)`` normalised batches.

Also measured: ``data.augment`` against the plain kornia pipeline it replaced (one
``Random*`` op per family, p < 1 each), and the share of one training step of a representative
network of the search space spent in our preprocessing (uint8 -> float, augmentation,
normalisation). Every figure is a ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench._common import add_common_args, begin, ratio_line, synthetic, table, workdir
from cli.common import HelpFormatter, fail

SHARE_TARGET = 0.10


class Rot90:
    """A random multiple of 90 degrees (torchvision has no such transform)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(1, 4, ())), dims=(-2, -1))


class AddUniform:
    """Additive brightness in ``[-r, r]`` on [0, 1] floats (kornia's RandomBrightness)."""

    def __init__(self, r: float):
        self.r = r

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x + (torch.rand(()) * 2 - 1) * self.r).clamp_(0, 1)


class MulUniform:
    """Multiplicative contrast in ``[1 - r, 1 + r]`` (kornia's RandomContrast)."""

    def __init__(self, r: float):
        self.r = r

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (1 + (torch.rand(()) * 2 - 1) * self.r)).clamp_(0, 1)


class Gamma:
    """Gamma in ``[1 - r, 1 + r]``; torchvision's colour ops refuse 6 channels, this one not."""

    def __init__(self, r: float):
        self.r = r

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        return F.adjust_gamma(x, float(1 + (torch.rand(()) * 2 - 1) * self.r))


def kornia_reference(cfg):
    """The plain kornia pipeline (one ``Random*`` op per family, p < 1 each) that
    ``data.augment`` replaced: same families, ranges and probabilities."""
    import kornia.augmentation as K

    ops: list = []
    if cfg.flips:
        ops += [K.RandomHorizontalFlip(), K.RandomVerticalFlip(),
                K.RandomRotation90(times=(0, 3), p=cfg.p)]
    if max(cfg.rotate_deg, cfg.translate, cfg.scale, cfg.shear_deg) > 0:
        ops.append(K.RandomAffine(
            degrees=cfg.rotate_deg, translate=(cfg.translate, cfg.translate),
            scale=(1 - cfg.scale, 1 + cfg.scale), shear=cfg.shear_deg or None,
            padding_mode="border", p=cfg.p))
    if cfg.brightness > 0:
        ops.append(K.RandomBrightness((1 - cfg.brightness, 1 + cfg.brightness), p=cfg.p))
    if cfg.contrast > 0:
        ops.append(K.RandomContrast((1 - cfg.contrast, 1 + cfg.contrast), p=cfg.p))
    if cfg.gamma > 0:
        ops.append(K.RandomGamma((1 - cfg.gamma, 1 + cfg.gamma), p=cfg.p))
    if cfg.blur_sigma > 0:
        ops.append(K.RandomGaussianBlur((5, 5), (0.1, cfg.blur_sigma), p=cfg.p / 2))
    if cfg.noise_std > 0:
        ops.append(K.RandomGaussianNoise(std=cfg.noise_std, p=cfg.p))
    return K.AugmentationSequential(*ops, data_keys=["input"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def augment_ratio(images: np.ndarray, cfg, batch_size: int, repeats: int,
                  device: str | torch.device = "cpu") -> float:
    """Speed of ``data.augment`` over the plain kornia pipeline on the same float batch
    (best of ``repeats`` interleaved timings each)."""
    from data.augment import build_augmenter

    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(images[:batch_size])).to(device).float() / 255
    ours, ref = build_augmenter(cfg).to(device), kornia_reference(cfg).to(device)
    best = {"ours": np.inf, "ref": np.inf}
    for rnd in range(repeats + 1):  # the first round warms both up
        for name, fn in (("ours", ours), ("ref", ref)):
            _sync(device)
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
            if rnd:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best["ref"] / best["ours"]


def per_sample_transform(cfg, size: int, mean: list[float], std: list[float]):
    """torchvision v2 transforms of the same families and ranges as ``data.augment``."""
    from torchvision.transforms import v2

    ops: list = [v2.Resize(size, antialias=True)]
    if cfg.flips:
        ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                v2.RandomApply([Rot90()], p=cfg.p)]
    if max(cfg.rotate_deg, cfg.translate, cfg.scale, cfg.shear_deg) > 0:
        ops.append(v2.RandomApply([v2.RandomAffine(
            degrees=cfg.rotate_deg, translate=(cfg.translate, cfg.translate),
            scale=(1 - cfg.scale, 1 + cfg.scale), shear=cfg.shear_deg or None)], p=cfg.p))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if cfg.brightness > 0:
        ops.append(v2.RandomApply([AddUniform(cfg.brightness)], p=cfg.p))
    if cfg.contrast > 0:
        ops.append(v2.RandomApply([MulUniform(cfg.contrast)], p=cfg.p))
    if cfg.gamma > 0:
        ops.append(v2.RandomApply([Gamma(cfg.gamma)], p=cfg.p))
    if cfg.blur_sigma > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(5, (0.1, cfg.blur_sigma))], p=cfg.p / 2))
    if cfg.noise_std > 0:
        ops.append(v2.RandomApply([v2.GaussianNoise(sigma=cfg.noise_std)], p=cfg.p))
    ops.append(v2.Normalize(mean, std))
    return v2.Compose(ops)


class NpyFolderDataset(Dataset):
    """Reads ``<ID>.npy`` (H, W, 6) from disk on every access and transforms it alone."""

    def __init__(self, files: list[Path], targets: np.ndarray, transform):
        self.files = files
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.load(self.files[i])).permute(2, 0, 1)
        return self.transform(x), self.targets[i]


def rate_ours(images: np.ndarray, targets: np.ndarray, pre, batch_size: int, epochs: int,
              seed: int) -> tuple[float, tuple[int, ...]]:
    """Best images/s over ``epochs`` epochs of DeviceBatches + Preprocessor on the CPU."""
    from data import DeviceBatches

    batches = DeviceBatches(images, targets, "cpu", batch_size=batch_size, seed=seed)
    pre(next(batches.epoch())[1], train=True)  # warm-up: kornia's first call is slow
    best, shape = 0.0, ()
    for _ in range(epochs):
        n, t0 = 0, time.perf_counter()
        for _, xb, _ in batches.epoch():
            x = pre(xb, train=True)
            n += len(x)
            shape = tuple(x.shape[1:])
        best = max(best, n / (time.perf_counter() - t0))
    return best, shape


def rate_loader(dataset: Dataset, batch_size: int, workers: int,
                epochs: int) -> tuple[float, tuple[int, ...]]:
    """Best images/s over ``epochs`` epochs of a shuffling DataLoader (workers restart per
    epoch, as with the default ``persistent_workers=False``)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    best, shape = 0.0, ()
    for _ in range(epochs):
        n, t0 = 0, time.perf_counter()
        for x, _ in loader:
            n += len(x)
            shape = tuple(x.shape[1:])
        best = max(best, n / (time.perf_counter() - t0))
    return best, shape


def _training_step(size: int, seed: int, device: torch.device):
    """A step function of the representative network, as ``training.loop`` runs it (bf16
    autocast and channels-last on CUDA): ``step(x, y) -> loss``."""
    import contextlib

    from model import CNNConfig, build_model, make_loss

    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    net = build_model(CNNConfig(input_size=size, widths=(32, 64, 128, 256))).to(device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    loss_fn = make_loss("multilabel").to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
              else contextlib.nullcontext()):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _full_batches(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                  device: torch.device):
    """Endless full batches ``(uint8 x, targets)`` of DeviceBatches on ``device``."""
    from data import DeviceBatches

    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images make no full batch of {batch_size}")
    batches = DeviceBatches(images, targets, device, batch_size=batch_size, seed=seed)
    while True:
        for _, xb, yb in batches.epoch():
            if len(xb) == batch_size:
                yield xb, yb


def step_share(images: np.ndarray, targets: np.ndarray, pre, size: int, batch_size: int,
               steps: int, seed: int, device: str | torch.device = "cpu") -> dict[str, float]:
    """Seconds per step in preprocessing vs the rest of a training step (the first step
    warms up and is not counted)."""
    device = torch.device(device)
    step, pre = _training_step(size, seed, device), pre.to(device)
    t_pre, t_net = 0.0, 0.0
    for i, (xb, yb) in enumerate(_full_batches(images, targets, batch_size, seed, device)):
        if i > steps:
            break
        _sync(device)
        t0 = time.perf_counter()
        x = pre(xb, train=True)
        _sync(device)
        t1 = time.perf_counter()
        step(x, yb)
        _sync(device)
        if i:
            t_pre += t1 - t0
            t_net += time.perf_counter() - t1
    total = t_pre + t_net
    return {"pre_ms": 1000 * t_pre / steps, "step_ms": 1000 * total / steps,
            "share": t_pre / total}


def steps_per_second(images: np.ndarray, targets: np.ndarray, pre, size: int,
                     batch_size: int, steps: int, seed: int, device: str | torch.device,
                     read_loss_each_step: bool) -> float:
    """Training steps per second (preprocessing included), the host waiting for the device
    only at the end, or at every step when ``read_loss_each_step`` (a finiteness check)."""
    device = torch.device(device)
    step, pre = _training_step(size, seed, device), pre.to(device)
    t0 = 0.0
    for i, (xb, yb) in enumerate(_full_batches(images, targets, batch_size, seed, device)):
        if i == 1:  # the first step warms up
            _sync(device)
            t0 = time.perf_counter()
        if i > steps:
            break
        loss = step(pre(xb, train=True), yb)
        if read_loss_each_step and not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
    _sync(device)
    return steps / (time.perf_counter() - t0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.data_path", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p, n=256)
    p.add_argument("--size", type=int, default=128, help="input size S the network sees")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--geometric", type=float, default=0.5,
                   help="AugmentConfig.from_strength geometric knob (the search's mean)")
    p.add_argument("--photometric", type=float, default=0.5,
                   help="AugmentConfig.from_strength photometric knob (>= 0.5 adds blur)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs timed per path (the best one counts)")
    p.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2],
                   help="DataLoader worker counts of the baseline")
    p.add_argument("--steps", type=int, default=3,
                   help="training steps timed for the augmentation share (0 skips it)")
    p.add_argument("--keep", default=None, help="make the synthetic set here and keep it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 2 or args.batch_size < 2 or args.size < 8 or args.epochs < 1 or args.steps < 0:
        return fail("--n and --batch-size must be at least 2, --size at least 8, --epochs at "
                    "least 1 and --steps not negative.")
    code = begin(args, f" -> {args.size} px, batch {args.batch_size}, augmentation strength "
                 f"({args.geometric}, {args.photometric}), {args.epochs} epoch(s) per path, "
                 f"DataLoader workers {args.loader_workers}, {args.steps} training steps for "
                 "the share")
    if code is not None:
        return code

    from data import AugmentConfig, Preprocessor, load_data
    from data.pipeline import channel_stats

    with workdir(args.keep) as tmp:
        folder = synthetic(args, tmp)
        es = load_data(folder, cache_dir=tmp / "cache")
        if len(es) < args.batch_size:
            return fail(f"{folder} holds {len(es)} erasers, fewer than one batch of "
                        f"{args.batch_size}; lower --batch-size.")
        arrays = folder / "arrays"
        files = [arrays / f"{k}.npy" for k in es.ids]
        if not all(f.exists() for f in files):
            return fail(f"{folder} has no arrays/<ID>.npy for every eraser; the per-sample "
                        "baseline reads .npy files (make a synthetic set, or give such a "
                        "folder).")
        images = es.images(args.size)
        targets = es.targets
        mean, std = channel_stats(images, range(6))
        cfg = AugmentConfig.from_strength(args.geometric, args.photometric)
        pre = Preprocessor(range(6), mean, std, cfg)
        torch.manual_seed(args.seed)

        rows, rates = [], {}
        ours, shape = rate_ours(images, targets, pre, args.batch_size, args.epochs, args.seed)
        rates["ours"] = ours
        rows.append(["ours: cached uint8 + DeviceBatches + kornia (batched)", "-",
                     f"{ours:.0f}", "1.00"])
        dataset = NpyFolderDataset(files, targets,
                                   per_sample_transform(cfg, args.size, mean, std))
        for w in args.loader_workers:
            rate, other = rate_loader(dataset, args.batch_size, w, args.epochs)
            if other != shape:
                return fail(f"internal: the paths disagree on the sample shape ({shape} vs "
                            f"{other}).")
            rates[w] = rate
            rows.append([".npy per sample + torchvision v2 + DataLoader", str(w), f"{rate:.0f}",
                         f"{rate / ours:.2f}"])
        print()
        print(table(rows, ["path", "workers", "images/s", "vs ours"]))
        print()
        for w in args.loader_workers:
            print(ratio_line(f"data path ours / per-sample DataLoader({w} workers)",
                             ours / rates[w], f"({args.size} px, batch {args.batch_size})"))

        for g, t in ((args.geometric, args.photometric), (1.0, 1.0)):
            r = augment_ratio(images, AugmentConfig.from_strength(g, t), args.batch_size, 3)
            print(ratio_line(f"augmentation data.augment / plain kornia pipeline, strength "
                             f"({g}, {t})", r, "(same families, ranges and probabilities; "
                             "higher is faster)"))
        if args.steps:
            full = Preprocessor(range(6), mean, std, AugmentConfig.from_strength(1.0, 1.0))
            for label, p in ((f"strength ({args.geometric}, {args.photometric})", pre),
                             ("strength (1.0, 1.0)", full)):
                s = step_share(images, targets, p, args.size, args.batch_size, args.steps,
                               args.seed)
                verdict = "met" if s["share"] < SHARE_TARGET else "NOT met"
                print(ratio_line(
                    f"preprocessing+augmentation / training step, {label}", s["share"],
                    f"({100 * s['share']:.1f} %: {s['pre_ms']:.0f} of {s['step_ms']:.0f} ms "
                    f"per step; target < {100 * SHARE_TARGET:.0f} % {verdict})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
