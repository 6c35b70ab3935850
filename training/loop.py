"""Train one configuration: the engine under every trial, and under ``train.py``.

It knows nothing of Optuna. Each epoch it calls ``callback(EpochReport)``; the search's
callback reports to the trial and may raise to prune, which simply propagates. The weights of
the best epoch (by the validation metric), not the last, are what a run returns.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from data.pipeline import DeviceBatches, Preprocessor, TrainData, to_device
from model import (
    build_model,
    class_weight_from_targets,
    complexity,
    evaluate,
    make_checkpoint,
    make_loss,
    pos_weight_from_targets,
    probabilities,
)
from model.channels import channel_indices
from model.config import ArchConfig, BackboneConfig, PatchConfig
from model.pretrained import WeightFinder, load_pretrained
from training.config import RunConfig, TrainConfig
from training.features import FLIP_VIEWS, FeatureCache, frozen_features
from training.memory import distance_maps, memory_bank

log = logging.getLogger(__name__)

class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run cannot continue."""


class StopTraining(Exception):
    """Raised by a callback to end the run after this epoch, keeping its best epoch (a
    study's budget running out, say); its message becomes the run's ``stop_reason``."""


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
    # The best epoch's weights (CPU tensors, not to be modified): lets a callback keep the
    # model as it stands at a moment, e.g. a benchmark reading its quality at wall-time marks.
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

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
    probs = probabilities(torch.cat(logits).float(), task)[:, 3].cpu().numpy()
    y = torch.cat(targets).amax(dim=1).cpu().numpy()
    return float(average_precision_score(y, probs)) if 0 < y.sum() < len(y) else float("nan")


# One function on purpose (about 140 lines): set-up, the epoch loop and the result read top to
# bottom in the order they run, and every trial, refit and cross-validation fold runs it.
def train(config: RunConfig, data: TrainData, *, device: str | torch.device = "cpu",
          callback: Callable[[EpochReport], None] | None = None,
          weights: WeightFinder | None = None,
          features: FeatureCache | None = None) -> TrainResult:
    """Train ``config`` on ``data``'s training rows, validating on its validation rows.

    Without validation rows (a final refit on every labelled eraser) it trains all
    ``config.train.epochs`` epochs and returns the last one, with empty metrics and thresholds.

    A pretrained backbone starts from the ImageNet weights ``weights`` finds (default: the
    user's ``ERASER_WEIGHTS`` and the download cache; :class:`~model.pretrained.WeightsError`
    when there are none). Frozen (``backbone_lr_scale`` 0), only its head trains, on feature
    maps computed once (kept in ``features`` for the next run with the same backbone).

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
    net = build_model(cfg)
    weight_file = None
    if isinstance(cfg, BackboneConfig | PatchConfig):
        weight_file = (weights or WeightFinder()).require(cfg.backbone)
        load_pretrained(net, cfg, weight_file)
    # channels-last on every device: 1.4-1.5x faster training steps on a CPU too, same
    # arithmetic (bench/RESULTS.md, "CPU training speed")
    net = net.to(device).to(memory_format=torch.channels_last)
    # a patch model's backbone is always frozen: its features are computed once per delivery
    frozen = isinstance(cfg, PatchConfig) or (isinstance(cfg, BackboneConfig)
                                              and tc.backbone_lr_scale == 0)
    if frozen:
        net.backbone.requires_grad_(False)

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

    # A patch head pools over its patches, wherever they are: flipped maps teach it nothing.
    views = FLIP_VIEWS if config.augment.flips and not isinstance(cfg, PatchConfig) else 1
    if frozen:
        def compute() -> tuple[torch.Tensor, ...]:
            images = to_device(data.images, device)
            t0 = time.perf_counter()
            # training maps in half precision (4 views of 1,000 erasers fit in memory), the
            # validation maps in full: they decide epochs and thresholds
            out = (frozen_features(net.backbone, pre, images, data.train_rows, views=views,
                                   dtype=torch.float16, autocast=lambda: _autocast(device)),
                   frozen_features(net.backbone, pre, images, data.val_rows,
                                   autocast=lambda: _autocast(device)))
            log.info("features of %s at %d px for %d erasers x %d view(s) in %.1f s",
                     cfg.backbone, cfg.input_size, len(data.train_rows), views,
                     time.perf_counter() - t0)
            return _with_memory(out, cfg, data, tc.seed) if getattr(cfg, "memory", 0) else out
        key = (cfg.backbone, cfg.channels, cfg.input_size, views, str(weight_file), id(data),
               len(data.train_rows), len(data.val_rows), getattr(cfg, "strides", None),
               getattr(cfg, "memory", 0), tc.seed)
        # the feature maps hold the training (validation) rows only, in order
        train_in, val_in, *bank = (features or FeatureCache()).get(key, compute)
        if bank:
            net.bank.copy_(bank[0])  # the checkpoint carries it: the model needs no data
        train_rows = val_rows = None
        train_y, val_y = data.targets[data.train_rows], data.targets[data.val_rows]
    else:
        train_in = val_in = data.images
        train_rows, val_rows, train_y, val_y = (data.train_rows, data.val_rows, data.targets,
                                                data.targets)
    batches = DeviceBatches(train_in, train_y, device, batch_size=tc.batch_size,
                            rows=train_rows, sampling=tc.sampling, codes=data.train_codes,
                            seed=tc.seed)
    val_batches = DeviceBatches(val_in, val_y, device, batch_size=max(tc.batch_size, 256),
                                rows=val_rows)
    view_rng = torch.Generator().manual_seed(tc.seed)

    def forward(xb: torch.Tensor, train: bool) -> torch.Tensor:
        """Logits of a batch: uint8 images, or a frozen backbone's feature maps."""
        if frozen:  # one random flip view per eraser when training, the eraser as is else
            pick = (torch.randint(xb.shape[1], (len(xb),), generator=view_rng) if train
                    else torch.zeros(len(xb), dtype=torch.long))
            with _autocast(device):
                return net.head(xb[torch.arange(len(xb)), pick.to(xb.device)])
        x = pre(xb, train=train).contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            return net(x)

    steps_per_epoch = math.ceil(len(batches) / tc.batch_size)
    total_steps = steps_per_epoch * tc.epochs
    opt = _optimizer(net, cfg, tc)
    if tc.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif tc.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total_steps)
    else:
        sched = None
    trainable = [p for g in opt.param_groups for p in g["params"]]

    history: list[dict[str, float]] = []
    best = {"score": -math.inf, "epoch": 0}
    stop_reason = f"completed {tc.epochs} epochs"
    val_targets = data.targets[data.val_rows]
    epoch = 0
    for epoch in range(1, tc.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        if frozen:
            net.backbone.eval()  # its BatchNorm statistics stay ImageNet's
        losses, lrs, seen_logits, seen_targets = [], [], [], []
        for step, (pos, xb, yb) in enumerate(batches.epoch()):
            logits = forward(xb, train=True)
            loss = loss_fn(logits.float(), yb, sample_weight[pos])
            lrs.append(opt.param_groups[0]["lr"])
            # Reading the loss on a GPU would make the host wait for every step (no queueing
            # ahead); there the check runs once per epoch, below, on the stacked losses.
            if device.type != "cuda" and not torch.isfinite(loss):
                raise _non_finite(loss.item(), epoch, step + 1, lrs[-1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
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
            net.eval()
            val_loss, val_logits = evaluate_logits(forward, val_batches, loss_fn)
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
            lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
            best_state=best["state"])
        history.append(report.row())
        log.debug("epoch %d/%d loss %.4f val %s %.4f", epoch, tc.epochs, train_loss, tc.metric,
                  score)
        if callback is not None:
            try:
                callback(report)
            except StopTraining as stop:
                stop_reason = str(stop) or f"stopped by the caller at epoch {epoch}"
                break
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
def evaluate_logits(forward: Callable[[torch.Tensor, bool], torch.Tensor],
                    batches: DeviceBatches, loss_fn: nn.Module) -> tuple[float, torch.Tensor]:
    """Mean loss and the logits (float32, CPU) over ``batches`` in order, without
    augmentation; ``forward(batch, train)`` gives the logits (the network in eval mode)."""
    out, total = [], 0.0
    for _, xb, yb in batches.epoch(shuffle=False):
        logits = forward(xb, False).float()
        total += loss_fn(logits, yb).item() * len(xb)
        out.append(logits.cpu())
    return total / max(len(batches), 1), torch.cat(out)


def _with_memory(maps: tuple[torch.Tensor, torch.Tensor], cfg: PatchConfig, data: TrainData,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A patch model's cached maps with their distance to its memory bank as one more
    channel (the training erasers' own patches left out), and the bank."""
    train_maps, val_maps = maps
    t0 = time.perf_counter()
    labels = torch.as_tensor(data.targets[data.train_rows])
    good = (labels.amax(dim=1) == 0).nonzero().flatten().to(train_maps.device)
    bank, owner = memory_bank(train_maps, good, cfg.memory, seed)
    train_d = distance_maps(train_maps, bank, owner)
    val_d = distance_maps(val_maps, bank)
    log.info("memory bank of %d patches from %d good erasers, distances in %.1f s",
             cfg.memory, len(good), time.perf_counter() - t0)
    return (torch.cat([train_maps, train_d.to(train_maps.dtype)], dim=2),
            torch.cat([val_maps, val_d.to(val_maps.dtype)], dim=2), bank)


def _optimizer(net: nn.Module, cfg: ArchConfig, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over what trains: a backbone at ``backbone_lr_scale`` times the head's
    learning rate (fine-tuning pretrained weights gently), nothing of a frozen one."""
    if isinstance(cfg, BackboneConfig | PatchConfig):
        groups = [{"params": list(net.head.parameters()), "lr": tc.lr}]
        if isinstance(cfg, BackboneConfig) and tc.backbone_lr_scale > 0:
            groups.append({"params": list(net.backbone.parameters()),
                           "lr": tc.lr * tc.backbone_lr_scale})
    else:
        groups = [{"params": list(net.parameters()), "lr": tc.lr}]
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=True,
                           weight_decay=tc.weight_decay)
