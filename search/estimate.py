"""How long a study will take on this device, measured before it starts.

A study that takes minutes on a GPU can take days on a laptop's CPU; users should know that
before they start, not after the first hour. :func:`estimate_study` draws configurations
from the search space (``suggest_config`` through a seeded random sampler on a throwaway
in-memory study), times one short epoch of the one with the median multiply-adds through the
real training loop (``training.loop.train``, so augmentation, mixed precision and validation
count) on random images of its input size, and scales that to every drawn configuration by
its multiply-adds and to the real split by its size. Multiply-adds predict time only
roughly (small convolutions run less efficiently), so the figures are good to a factor of
about two: enough to choose between "start it" and "use --timeout or a GPU".
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import optuna
import torch

from data.pipeline import TrainData
from model import complexity, describe
from search.space import SearchSpace, suggest_config
from training.config import RunConfig
from training.loop import NonFiniteLossError, train

log = logging.getLogger(__name__)

SAMPLES = 32  # configurations drawn from the space
CALIBRATION_BATCHES = 2  # training batches in the timed epoch

EpochTimer = Callable[[RunConfig, int, torch.device], float]


class EstimateError(RuntimeError):
    """The configuration to time could not train here (message is user-facing). The trials
    meet the same limit and fail one by one; the run itself can go on without an estimate."""


@dataclass(frozen=True)
class StudyEstimate:
    """Expected time of a study's trials on one device (one worker), from one measurement."""

    architecture: str  # the median configuration that was timed, described
    input_size: int
    epoch_seconds: float  # one epoch of the median configuration on the real split
    mean_epoch_seconds: float  # the mean over the drawn configurations (for totals)
    max_epochs: int
    trials: int

    @property
    def trial_seconds(self) -> float:
        """A median trial that runs all its epochs."""
        return self.epoch_seconds * self.max_epochs

    @property
    def study_seconds(self) -> float:
        """Every remaining trial running all its epochs: an upper bound."""
        return self.mean_epoch_seconds * self.max_epochs * self.trials


def time_epoch(config: RunConfig, n_train: int, device: torch.device) -> float:
    """Seconds of one epoch of ``config`` over ``n_train`` random training images (and half
    as many for validation) on ``device``, after an untimed warm-up run (first-use costs:
    lazy imports, CUDA kernel loading, cuDNN autotuning)."""
    size = config.model.input_size
    n_val = max(8, n_train // 2)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_val, 6, size, size), dtype=torch.uint8,
                           generator=gen).to(device)
    targets = np.tile(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.uint8),
                      ((n_train + n_val) // 4 + 1, 1))[:n_train + n_val]
    ids = [f"c{i}" for i in range(n_train + n_val)]
    run = replace(config, train=replace(config.train, epochs=1, early_stop_patience=0))
    batch = config.train.batch_size
    warm_up = TrainData(images, targets, ids, ids[:batch], ids[n_train:n_train + batch])
    train(run, warm_up, device=device)
    data = TrainData(images, targets, ids, ids[:n_train], ids[n_train:])
    return float(train(run, data, device=device).history[0]["seconds"])


def sample_configs(space: SearchSpace, n: int = SAMPLES, seed: int = 0) -> list[RunConfig]:
    """``n`` configurations drawn at random from ``space`` (a throwaway in-memory study)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return [suggest_config(study.ask(), space) for _ in range(n)]


def epoch_seconds(config: RunConfig, n_train: int, n_val: int, device: str | torch.device, *,
                  timer: EpochTimer | None = None) -> float:
    """Expected seconds of one epoch of ``config`` over ``n_train`` training and ``n_val``
    validation erasers on ``device``, from one short timed epoch (``timer``, default
    :func:`time_epoch`). Raises
    :class:`EstimateError` when it cannot train here (out of memory, refused, diverged)."""
    n_calib = CALIBRATION_BATCHES * config.train.batch_size
    try:
        seconds = (timer or time_epoch)(config, n_calib, torch.device(device))
    except (torch.OutOfMemoryError, NonFiniteLossError, ValueError) as exc:
        raise EstimateError(f"could not train here ({exc})") from None
    log.info("timed %s: %.3f s for an epoch of %d images", describe(config.model), seconds,
             n_calib)
    # The timed epoch saw n_calib training and n_calib/2 validation images; the real epoch
    # sees n_train and n_val (validation is a forward pass only: about a third of the cost).
    return seconds * (n_train + n_val / 3) / (n_calib + n_calib / 6)


def estimate_study(space: SearchSpace, n_train: int, n_val: int, device: str | torch.device,
                   trials: int, *, samples: int = SAMPLES, seed: int = 0,
                   timer: EpochTimer | None = None) -> StudyEstimate:
    """Time the median configuration of ``space`` on ``device`` and scale it to the study.

    ``n_train``/``n_val``: the real split's sizes; ``trials``: how many remain to run.
    Raises :class:`EstimateError` like :func:`epoch_seconds`.
    """
    configs = sample_configs(space, samples, seed)
    work = [complexity(c.model)["macs"] for c in configs]
    median = sorted(range(len(configs)), key=work.__getitem__)[len(configs) // 2]
    ref = configs[median]
    epoch = epoch_seconds(ref, n_train, n_val, device, timer=timer)
    per_config = [epoch * w / work[median] for w in work]
    return StudyEstimate(architecture=describe(ref.model), input_size=ref.model.input_size,
                         epoch_seconds=epoch, mean_epoch_seconds=statistics.fmean(per_config),
                         max_epochs=space.epochs, trials=trials)


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``7 min``, ``3.5 h`` or ``2.1 days``."""
    if seconds < 9.5:  # an epoch of a small network on a GPU, or at 48 px on a CPU
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe_estimate(e: StudyEstimate) -> list[str]:
    """The estimate in a few plain lines for the terminal."""
    return [f"a median trial ({e.architecture}) takes about {duration(e.epoch_seconds)} per "
            f"epoch here, {duration(e.trial_seconds)} for all {e.max_epochs} epochs",
            f"{e.trials} trial(s) x up to {e.max_epochs} epochs: at most about "
            f"{duration(e.study_seconds)} with one worker; pruning and early stopping end "
            "most trials sooner, often at a quarter to a half of that"]
