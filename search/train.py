"""Train one configuration: the engine under every trial, and under ``train.py``.

It knows nothing of Optuna. Each epoch it calls ``callback(EpochReport)``; the search's
callback reports to the trial and may raise to prune, which simply propagates. The weights of
the best epoch (by the validation metric), not the last, are what a run returns.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data import CHANNELS, AugmentConfig, DeviceBatches, EraserSet, Preprocessor, Split
from data.channels import channel_indices
from data.fileio import write_text
from data.pipeline import channel_stats, to_device
from model import (
    CNNConfig,
    ThresholdPolicy,
    build_model,
    class_weight_from_targets,
    complexity,
    evaluate,
    make_checkpoint,
    make_loss,
    pos_weight_from_targets,
    probabilities,
)

log = logging.getLogger(__name__)

METRICS = ("graded_ap", "defect_ap", "graded_f1")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run cannot continue."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything about how a network is trained (the architecture is in ``CNNConfig``)."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd (with Nesterov momentum)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | onecycle | constant
    grad_clip: float = 1.0  # max gradient norm; 0 switches clipping off
    loss: str = "bce"  # bce | focal (multiclass: ce | focal)
    pos_weight_factor: float = 1.0  # times n_neg/n_pos (sigmoid heads); 0 = no weighting
    class_weight_power: float = 1.0  # multiclass: (1/frequency)**power; 0 = no weighting
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    neg_smoothing: float = 0.0  # one-sided: labelled-good targets become this (missed defects)
    sampling: str = "shuffle"  # shuffle | balanced (then no loss weighting)
    flagged_weight: float = 1.0  # loss weight of erasers flagged as suspected mislabels
    early_stop_patience: int = 8  # epochs without improvement; 0 = never stop early
    metric: str = "graded_ap"  # what "best epoch" and the study maximise
    threshold: str = "max_f1"  # max_f1 | min_recall
    min_recall: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs two samples)"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
            (self.lr > 0, "lr must be > 0"),
            (self.schedule in ("cosine", "onecycle", "constant"),
             "schedule must be cosine, onecycle or constant"),
            (self.sampling in ("shuffle", "balanced"), "sampling must be shuffle or balanced"),
            (self.metric in METRICS, f"metric must be one of {METRICS}"),
            (0.0 <= self.flagged_weight <= 1.0, "flagged_weight must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.sampling == "balanced" and (self.pos_weight_factor or self.class_weight_power):
            # Both re-balance the classes; together they would over-weight the minority.
            raise ValueError("balanced sampling and loss weighting are exclusive: set "
                             "pos_weight_factor=0 and class_weight_power=0 with sampling "
                             "'balanced'")
        ThresholdPolicy(self.threshold, self.min_recall)  # validates the policy

    @property
    def policy(self) -> ThresholdPolicy:
        return ThresholdPolicy(self.threshold, self.min_recall)


@dataclass(frozen=True)
class RunConfig:
    """One complete, replayable training run: architecture, training and augmentation."""

    model: CNNConfig = field(default_factory=CNNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": asdict(self.train),
                "augment": self.augment.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """From plain data (``to_dict``'s shape; missing keys keep their defaults). Raises
        ``ValueError`` or ``TypeError`` naming what does not fit."""
        if not isinstance(d, dict) or not all(isinstance(d.get(k, {}), dict)
                                              for k in ("model", "train", "augment")):
            raise ValueError("expected a JSON object with model, train and augment objects")
        unknown = set(d) - {"model", "train", "augment"}
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}; expected model, train, "
                             "augment")
        train_keys = {f.name for f in fields(TrainConfig)}
        bad = set(d.get("train", {})) - train_keys
        if bad:
            raise ValueError(f"unknown train key(s) {sorted(bad)}; known: {sorted(train_keys)}")
        aug_keys = {f.name for f in fields(AugmentConfig)}
        bad = set(d.get("augment", {})) - aug_keys
        if bad:
            raise ValueError(f"unknown augment key(s) {sorted(bad)}; known: {sorted(aug_keys)}")
        return cls(model=CNNConfig.from_dict(d.get("model", {})),
                   train=TrainConfig(**d.get("train", {})),
                   augment=AugmentConfig(**d.get("augment", {})))


@dataclass
class EpochReport:
    """What one epoch produced; handed to the callback."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    train_ap: float  # defect AP on the augmented training batches as they were trained on
    val_metrics: dict[str, float]
    score: float  # val_metrics[metric]
    best_score: float
    best_epoch: int
    lr: float
    seconds: float

    def row(self) -> dict[str, float]:
        """Flat plain-data view for logs, user attributes and plots."""
        return {"epoch": self.epoch, "train_loss": self.train_loss, "val_loss": self.val_loss,
                "train_ap": self.train_ap, "lr": self.lr, "seconds": self.seconds,
                **{f"val_{k}": v for k, v in self.val_metrics.items()}}


@dataclass
class TrainResult:
    """The best epoch's weights and everything needed to ship or judge them."""

    config: RunConfig
    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    score: float
    metrics: dict[str, float]
    thresholds: dict[str, float]
    val_ids: list[str]
    val_probs: np.ndarray  # (n_val, 4) at the best epoch, model.PROB_NAMES order
    val_targets: np.ndarray
    mean: list[float]
    std: list[float]
    history: list[dict[str, float]]
    stop_reason: str
    seconds: float
    params: int
    macs: int

    def checkpoint(self, **meta) -> dict:
        """The ``.pth`` dict (SPEC.md format) of the best epoch."""
        net = build_model(self.config.model)
        net.load_state_dict(self.state_dict)
        return make_checkpoint(
            net=net, cfg=self.config.model, mean=self.mean, std=self.std,
            thresholds=self.thresholds, threshold_policy=self.config.train.policy,
            metrics=self.metrics, train_config=asdict(self.config.train),
            augment_config=self.config.augment.to_dict(), best_epoch=self.best_epoch,
            epochs_run=self.epochs_run, **meta)


class TrainData:
    """The erasers of one split at one input size, ready for any number of runs.

    ``images`` holds the whole set (possibly already on the training device, shared by all
    trials); the split picks rows. Channel statistics come from the training rows only.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, targets: np.ndarray,
                 ids: Sequence[str], train_ids: Sequence[str], val_ids: Sequence[str],
                 flagged: Sequence[str] = ()):
        row = {k: i for i, k in enumerate(ids)}
        self.images = images
        self.targets = np.asarray(targets)
        self.train_rows = np.array([row[k] for k in train_ids], dtype=np.int64)
        self.val_rows = np.array([row[k] for k in val_ids], dtype=np.int64)
        self.val_ids = list(val_ids)
        self.train_codes = [f"{x}_{y}" for x, y in self.targets[self.train_rows]]
        flagged_set = set(flagged)
        self.train_flagged = np.array([k in flagged_set for k in train_ids], dtype=bool)
        train_images = torch.as_tensor(images)[torch.as_tensor(self.train_rows)].cpu()
        self.mean6, self.std6 = channel_stats(train_images, range(len(CHANNELS)))

    @classmethod
    def from_split(cls, data: EraserSet, split: Split, size: int, *, fold: int = 0,
                   device: str | torch.device = "cpu", flagged: Sequence[str] = ()) -> TrainData:
        images = to_device(data.images(size), device)
        return cls(images, data.targets, data.ids, split.train_ids(fold), split.val_ids(fold),
                   flagged)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device):
    # bf16 needs no loss scaling; on the CPU autocast would only slow the small convs down.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _non_finite(value: float, epoch: int, step: int, lr: float) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"the training loss became {value} at epoch {epoch}, step {step} (lr {lr:.3g}); lower "
        "the learning rate or keep gradient clipping on.")


def _defect_ap(logits: list[torch.Tensor], targets: list[torch.Tensor], task: str) -> float:
    from sklearn.metrics import average_precision_score

    probs = probabilities(torch.cat(logits).float(), task)[:, 3].cpu().numpy()
    y = torch.cat(targets).amax(dim=1).cpu().numpy()
    return float(average_precision_score(y, probs)) if 0 < y.sum() < len(y) else float("nan")


def train(config: RunConfig, data: TrainData, *, device: str | torch.device = "cpu",
          callback: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Train ``config`` on ``data``'s training rows, validating on its validation rows.

    Without validation rows (a final refit on every labelled eraser) it trains all
    ``config.train.epochs`` epochs and returns the last one, with empty metrics and thresholds.

    Raises :class:`NonFiniteLossError` if the loss stops being finite; anything the callback
    raises (e.g. a pruning signal) propagates unchanged.
    """
    start = time.perf_counter()
    device = torch.device(device)
    cfg, tc = config.model, config.train
    if cfg.input_size != data.size:
        raise ValueError(f"the model expects {cfg.input_size} px but the data are {data.size} px")
    seed_everything(tc.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels

    ch = channel_indices(cfg.channels)
    mean = [data.mean6[i] for i in ch]
    std = [data.std6[i] for i in ch]
    pre = Preprocessor(ch, mean, std, config.augment).to(device)
    net = build_model(cfg).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)

    train_targets = data.targets[data.train_rows]
    loss_fn = make_loss(
        cfg.task, tc.loss,
        pos_weight=(pos_weight_from_targets(train_targets, cfg.task, tc.pos_weight_factor)
                    if cfg.task != "multiclass" and tc.pos_weight_factor else None),
        class_weight=(class_weight_from_targets(train_targets, tc.class_weight_power)
                      if cfg.task == "multiclass" and tc.class_weight_power else None),
        focal_gamma=tc.focal_gamma, label_smoothing=tc.label_smoothing,
        neg_smoothing=tc.neg_smoothing).to(device)
    sample_weight = torch.where(torch.as_tensor(data.train_flagged),
                                tc.flagged_weight, 1.0).float().to(device)

    batches = DeviceBatches(data.images, data.targets, device, batch_size=tc.batch_size,
                            rows=data.train_rows, sampling=tc.sampling,
                            codes=data.train_codes, seed=tc.seed)
    val_batches = DeviceBatches(data.images, data.targets, device,
                                batch_size=max(tc.batch_size, 256), rows=data.val_rows)
    steps_per_epoch = math.ceil(len(batches) / tc.batch_size)
    total_steps = steps_per_epoch * tc.epochs

    if tc.optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=True,
                              weight_decay=tc.weight_decay)
    if tc.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif tc.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=total_steps)
    else:
        sched = None

    history: list[dict[str, float]] = []
    best = {"score": -math.inf, "epoch": 0}
    stop_reason = f"completed {tc.epochs} epochs"
    val_targets = data.targets[data.val_rows]
    epoch = 0
    for epoch in range(1, tc.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        losses, lrs, seen_logits, seen_targets = [], [], [], []
        for step, (pos, xb, yb) in enumerate(batches.epoch()):
            x = pre(xb, train=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                logits = net(x)
            loss = loss_fn(logits.float(), yb, sample_weight[pos])
            lrs.append(opt.param_groups[0]["lr"])
            # Reading the loss on a GPU would make the host wait for every step (no queueing
            # ahead); there the check runs once per epoch, below, on the stacked losses.
            if device.type != "cuda" and not torch.isfinite(loss):
                raise _non_finite(loss.item(), epoch, step + 1, lrs[-1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
            seen_logits.append(logits.detach())
            seen_targets.append(yb)
        stacked = torch.stack(losses)
        finite = torch.isfinite(stacked)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise _non_finite(stacked[first].item(), epoch, first + 1, lrs[first])
        train_loss = stacked.mean().item()
        train_ap = _defect_ap(seen_logits, seen_targets, cfg.task)

        if len(data.val_rows):
            val_loss, val_logits = evaluate_logits(net, pre, val_batches, loss_fn, device)
            val_probs = probabilities(val_logits, cfg.task).numpy()
            metrics = evaluate(val_probs, val_targets, policy=tc.policy)
        else:  # nothing to choose an epoch on: the last one is the result
            val_loss, val_probs, metrics = math.nan, np.empty((0, 4), np.float32), {}
        score = metrics.get(tc.metric, math.nan)
        if not math.isfinite(score):
            score = -math.inf  # undefined (a class absent from validation) never wins
        if score > best["score"] or best["epoch"] == 0 or not len(data.val_rows):
            best = {"score": score, "epoch": epoch, "metrics": metrics, "probs": val_probs,
                    "state": copy.deepcopy({k: v.detach().cpu()
                                            for k, v in net.state_dict().items()})}
        report = EpochReport(
            epoch=epoch, epochs=tc.epochs, train_loss=train_loss, val_loss=val_loss,
            train_ap=train_ap, val_metrics=metrics, score=metrics.get(tc.metric, math.nan),
            best_score=best["score"], best_epoch=best["epoch"],
            lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
        history.append(report.row())
        log.debug("epoch %d/%d loss %.4f val %s %.4f", epoch, tc.epochs, train_loss, tc.metric,
                  score)
        if callback is not None:
            callback(report)
        if tc.early_stop_patience and epoch - best["epoch"] >= tc.early_stop_patience:
            stop_reason = (f"early stop at epoch {epoch}: no {tc.metric} gain in "
                           f"{tc.early_stop_patience} epochs")
            break

    cx = complexity(cfg)
    return TrainResult(
        config=config, state_dict=best["state"], best_epoch=best["epoch"], epochs_run=epoch,
        score=best["score"], metrics=best["metrics"],
        thresholds={k.removeprefix("threshold_"): v for k, v in best["metrics"].items()
                    if k.startswith("threshold_")},
        val_ids=data.val_ids, val_probs=best["probs"], val_targets=val_targets,
        mean=mean, std=std, history=history, stop_reason=stop_reason,
        seconds=time.perf_counter() - start, params=cx["params"], macs=cx["macs"])


@torch.inference_mode()
def evaluate_logits(net: nn.Module, pre: Preprocessor, batches: DeviceBatches,
                    loss_fn: nn.Module, device: torch.device) -> tuple[float, torch.Tensor]:
    """Mean loss and the logits (float32, CPU) over ``batches`` in order, without augmentation."""
    net.eval()
    out, total = [], 0.0
    for _, xb, yb in batches.epoch(shuffle=False):
        x = pre(xb, train=False)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = net(x).float()
        total += loss_fn(logits, yb).item() * len(xb)
        out.append(logits.cpu())
    return total / max(len(batches), 1), torch.cat(out)


class RunFileError(ValueError):
    """A run file that cannot be read or holds no run configuration (message is user-facing)."""


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write ``config`` as a run file (JSON) that :func:`load_config` reads back."""
    return write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(path: str | Path, **train: object) -> RunConfig:
    """The run file at ``path`` (``save_config``'s JSON; missing keys keep their defaults),
    with the ``train`` settings given here overriding the file's. Raises
    :class:`RunFileError` naming the file and what is wrong with it."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"cannot read the run file {path}: {exc}") from None
    try:
        config = RunConfig.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise RunFileError(f"{path} is not a valid run configuration: {exc}") from None
    return replace(config, train=replace(config.train, **train)) if train else config
