"""The Optuna objective: one trial = sample a configuration, train it, keep its best epoch.

The data are loaded, validated, split and cached once per process (the Optuna FAQ pattern:
a callable class), and the uint8 tensor of each input size is kept on the training device for
every later trial. The training loop itself knows nothing of Optuna; this module adapts it.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.artifacts import upload_artifact

from data import EraserSet, Split
from data.pipeline import TrainData
from model import PROB_NAMES, describe, save_checkpoint
from model.pretrained import WeightFinder, WeightsError
from search.space import SearchSpace, suggest_config
from training.device import describe_device
from training.features import FeatureCache
from training.loop import EpochReport, NonFiniteLossError, StopTraining, TrainResult, train

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial could not finish (out of memory, non-finite loss, invalid configuration).

    The study catches it: the trial is recorded as FAIL with its reason (``fail_reason``) and
    cause (``fail_cause``, one of :data:`CAUSES`) and the search goes on, until the same cause
    ends several trials in a row (``search.study.CircuitBreaker``). Anything else (a bug)
    still stops the study loudly.
    """


CAUSES = ("out_of_memory", "weights", "non_finite_loss", "invalid_configuration",
          "undefined_metric")


EpochHook = Callable[[int, EpochReport], None]
TrialHook = Callable[[optuna.Trial, TrainResult], None]
StopHook = Callable[[optuna.Trial, str, list[dict]], None]  # (trial, why, epochs so far)
COMPARED = ("_ap", "_auroc", "_f1")  # with threshold_*: the metrics kept as user attributes


class Objective:
    """Callable objective over one validated data set and split."""

    def __init__(self, data: EraserSet, split: Split, space: SearchSpace, *,
                 device: str | torch.device = "cpu",
                 artifact_store: optuna.artifacts.FileSystemArtifactStore | None = None,
                 flagged: Sequence[str] = (), on_epoch: EpochHook | None = None,
                 on_result: Sequence[TrialHook] = (), on_stop: Sequence[StopHook] = (),
                 deadline: float | None = None, weights: WeightFinder | None = None):
        self.data = data
        self.split = split
        self.space = space
        self.device = torch.device(device)
        self.artifact_store = artifact_store
        self.flagged = tuple(flagged)
        self.on_epoch = on_epoch
        self.on_result = list(on_result)
        self.on_stop = list(on_stop)  # pruned or failed trials: why, and the curve so far
        self.deadline = deadline  # time.monotonic() after which a running trial ends early
        self.data_hash = data.data_hash
        self._train_data: dict[int, TrainData] = {}
        self.weights = weights  # where pretrained backbones find their ImageNet weights
        self.features = FeatureCache()  # a frozen backbone's feature maps, for the next trial

    def train_data(self, size: int) -> TrainData:
        """The split at ``size`` px, resized once and kept on the device for later trials."""
        if size not in self._train_data:
            self._train_data[size] = TrainData.from_split(
                self.data, self.split, size, device=self.device, flagged=self.flagged)
        return self._train_data[size]

    def __call__(self, trial: optuna.Trial) -> float:
        config = suggest_config(trial, self.space)
        trial.set_user_attr("architecture", describe(config.model))
        data = self.train_data(config.model.input_size)
        metric = config.train.metric

        rows: list[dict] = []
        cut: list[int] = []  # the epoch at which the study's budget ended this trial early

        def report(r: EpochReport) -> None:
            rows.append(r.row())
            # The pruner sees the best score so far, not the epoch's: on a validation split of
            # a few hundred noisy labels single epochs jump, and the run keeps its best epoch
            # anyway. An undefined score (a class absent from validation) counts as the worst.
            trial.report(r.best_score if math.isfinite(r.best_score) else 0.0, r.epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, r)
            if trial.should_prune():
                reason = f"pruned at epoch {r.epoch}: best {metric} {r.best_score:.4f}"
                trial.set_user_attr("stop_reason", reason)
                trial.set_user_attr("epochs_run", r.epoch)
                self._stopped(trial, reason, rows)
                raise optuna.TrialPruned(reason)
            if (self.deadline is not None and time.monotonic() >= self.deadline
                    and r.epoch < r.epochs):
                cut.append(r.epoch)
                raise StopTraining(f"the study's budget ran out at epoch {r.epoch}")

        failure = None
        try:
            result = train(config, data, device=self.device, callback=report,
                           weights=self.weights, features=self.features)
        except torch.OutOfMemoryError:
            self.features.clear()
            failure = ("out_of_memory",
                       f"out of memory on {self.device} ({config.model.input_size} px, batch "
                       f"{config.train.batch_size}, {describe(config.model)})")
        except WeightsError as exc:  # e.g. a worker on a machine without the weights
            failure = ("weights", str(exc))
        except NonFiniteLossError as exc:
            failure = ("non_finite_loss", str(exc))
        except ValueError as exc:  # a configuration the model or loss refuses
            failure = ("invalid_configuration", f"invalid configuration: {exc}")
        # Ctrl-C/SIGTERM: search.study.run_trials fails the trial and queues its parameters.
        if failure is not None:
            # Outside the handler: the exception and the frames holding its tensors are gone,
            # so the memory can really be freed before the next trial.
            self._fail(trial, *failure, rows)
        if not math.isfinite(result.score):
            self._fail(trial, "undefined_metric", f"{metric} is undefined on the validation "
                       "split (a class has no example there); use a larger validation fraction",
                       rows)
        self._record(trial, result)
        for hook in self.on_result:  # e.g. figures and notes for the dashboard
            hook(trial, result)
        if cut:
            # Not a result: a score after a few of its epochs is not comparable with finished
            # trials. PRUNED at its last epoch, the sampler ranks it among the trials cut short
            # (below every finished one), while its weights and scores stay for export.
            trial.set_user_attr("partial", f"cut by the study's budget after {cut[0]} of "
                                f"{config.train.epochs} epochs")
            raise optuna.TrialPruned(trial.user_attrs["partial"])
        return result.score

    def _fail(self, trial: optuna.Trial, cause: str, reason: str, rows: list[dict]) -> None:
        # Free what the failed run held before the next trial allocates again.
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("fail_cause", cause)
        self._stopped(trial, reason, rows)
        raise TrialFailed(reason) from None

    def _stopped(self, trial: optuna.Trial, reason: str, rows: list[dict]) -> None:
        for hook in self.on_stop:
            try:
                hook(trial, reason, rows)
            except Exception:  # a note must never turn a pruned trial into a crash
                log.warning("the stop hook of trial %d failed", trial.number, exc_info=True)

    def _record(self, trial: optuna.Trial, result: TrainResult) -> None:
        # No copy of the whole configuration: search.space.trial_config replays it from the
        # parameters and the stored space, and a JSON column would swamp the dashboard.
        # What a person compares across trials, to 4 significant digits; the rest (precision,
        # recall, balanced accuracy) is in the trial's note and its checkpoint's val_metrics.
        attrs = {
            **{k: float(f"{v:.4g}") for k, v in result.metrics.items()
               if math.isfinite(v) and (k.endswith(COMPARED) or k.startswith("threshold_"))},
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "params": result.params, "macs": result.macs,
            "seconds": round(result.seconds, 2), "stop_reason": result.stop_reason,
            "device": describe_device(self.device),  # for the report's hardware table
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.artifact_store is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = result.checkpoint(
                study=trial.study.study_name, trial=trial.number, params=dict(trial.params),
                data_hash=self.data_hash, split_hash=self.split.hash,
                source_size=self.data.image_size)
            path = save_checkpoint(ckpt, Path(tmp) / f"trial_{trial.number}.pth")
            trial.set_user_attr("checkpoint_artifact", self._upload(trial, path))
            history = Path(tmp) / "history.json"
            history.write_text(json.dumps(result.history, indent=1))
            self._upload(trial, history, "application/json")
            # the best epoch's validation probabilities: what export's ensemble is chosen on
            preds = Path(tmp) / "val_probs.json"
            preds.write_text(json.dumps({
                "ids": list(result.val_ids), "prob_names": list(PROB_NAMES),
                "probs": np.round(result.val_probs.astype(np.float64), 6).tolist()}))
            trial.set_user_attr("val_probs_artifact",
                                self._upload(trial, preds, "application/json"))

    def _upload(self, trial: optuna.Trial, path: Path, mimetype: str | None = None) -> str:
        return upload_artifact(artifact_store=self.artifact_store, file_path=str(path),
                               study_or_trial=trial, mimetype=mimetype)
