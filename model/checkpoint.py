"""The exported model file (``<group>.pth``): build, save atomically, load safely.

A checkpoint is a plain dict of Python scalars, strings, lists, dicts and CPU tensors (see
SPEC.md, "The exported model"), so it loads with ``torch.load(path, weights_only=True)`` and
never needs arbitrary unpickling. :func:`load` rebuilds a ready-to-run
:class:`~model.inference.InspectionModel` from it in one call.
"""

from __future__ import annotations

import logging
import os
import pickle
import platform
import warnings
import zipfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .channels import CHANNELS
from .config import ArchConfig, arch_from_dict
from .ensemble import EnsembleModel
from .fileio import atomic_path
from .inference import InspectionModel
from .metrics import GRADED, PROB_NAMES, ThresholdPolicy
from .net import build_model

log = logging.getLogger(__name__)

FORMAT = "milan-eraser-cnn"
FORMAT_VERSION = 2
"""The newest format this code reads: 1, one network; 2, an ensemble (``kind``), whose
``members`` are format-1 checkpoints. A single model is still written as 1, so older code
keeps loading it, and refuses an ensemble with "update the code" rather than misreading it."""
SINGLE_VERSION = 1
ENSEMBLE = "ensemble"
DEFAULT_SOURCE_SIZE = 310

RESERVED_KEYS = frozenset(
    {
        "format",
        "format_version",
        "arch",
        "state_dict",
        "task",
        "class_names",
        "prob_names",
        "channels",
        "source_channels",
        "input_size",
        "normalization",
        "thresholds",
        "threshold_policy",
        "val_metrics",
        "versions",
        "created",
        "kind",
        "members",
        "member_weights",
    }
)
REQUIRED_KEYS = ("arch", "state_dict", "normalization", "thresholds")
ENSEMBLE_KEYS = ("members", "member_weights", "thresholds")
VERSIONED_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "optuna", "kornia",
                      "timm")


class CheckpointError(Exception):
    """A model file that cannot be used; the message names the file and what to do."""


def _plain(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into plain types.

    Raises ``TypeError`` naming ``where`` for anything ``weights_only`` loading would refuse,
    so a bad checkpoint fails when it is made rather than when someone loads it.
    """
    # numpy scalars first: np.float64 is a float subclass yet pickles as a numpy global.
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if value is None:
        return value
    # Coerce subclasses (IntEnum, str enums...) to the base type for the same reason.
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint key {where}[{k!r}] must be a str or int")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; only plain types "
        "(numbers, strings, lists, dicts, tensors) load with weights_only=True"
    )


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a model, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _unwrap(net: nn.Module) -> nn.Module:
    # Accept the module as trained: wrapped by InspectionModel, torch.compile or DataParallel.
    if isinstance(net, InspectionModel):
        net = net.net
    net = getattr(net, "_orig_mod", net)
    if isinstance(net, nn.DataParallel | nn.parallel.DistributedDataParallel):
        net = net.module
    return net


def make_checkpoint(
    *,
    net: nn.Module,
    cfg: ArchConfig,
    mean: Any,
    std: Any,
    thresholds: dict[str, float],
    threshold_policy: ThresholdPolicy | dict[str, Any],
    metrics: dict[str, float],
    **meta: Any,
) -> dict[str, Any]:
    """The plain-dict checkpoint for ``net`` built from ``cfg``.

    ``mean``/``std``: per selected channel, in [0, 1] units. ``meta`` carries the rest
    (``study``, ``trial``, ``params``, ``train_config``, ``data_hash``, ``split_hash``...;
    ``source_size`` overrides the default 310) and must not reuse a reserved key.
    """
    clash = sorted(RESERVED_KEYS & set(meta))
    if clash:
        raise ValueError(f"make_checkpoint: meta key(s) {clash} are reserved")
    mean_l = [float(v) for v in np.asarray(mean, dtype=np.float64).reshape(-1)]
    std_l = [float(v) for v in np.asarray(std, dtype=np.float64).reshape(-1)]
    if len(mean_l) != cfg.in_channels or len(std_l) != cfg.in_channels:
        raise ValueError(
            f"make_checkpoint: need {cfg.in_channels} mean/std values for channels "
            f"{list(cfg.channels)}, got {len(mean_l)} and {len(std_l)}"
        )
    missing = [n for n in PROB_NAMES if n not in thresholds]
    if missing:
        raise ValueError(f"make_checkpoint: thresholds lack {missing}")
    if isinstance(threshold_policy, ThresholdPolicy):
        threshold_policy = threshold_policy.to_dict()
    state_dict = {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in _unwrap(net).state_dict().items()
    }
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": SINGLE_VERSION,
        "arch": cfg.to_dict(),
        "state_dict": state_dict,
        "task": cfg.task,
        "class_names": list(GRADED),
        "prob_names": list(PROB_NAMES),
        "channels": list(cfg.channels),
        "source_channels": list(CHANNELS),
        "input_size": cfg.input_size,
        "source_size": DEFAULT_SOURCE_SIZE,
        "normalization": {"mean": mean_l, "std": std_l},
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "threshold_policy": threshold_policy,
        "val_metrics": dict(metrics),
    }
    return _stamped(ckpt, meta)


def _stamped(ckpt: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """``ckpt`` with ``meta``, the package versions and the time, as plain data."""
    ckpt.update(meta)
    ckpt["versions"] = package_versions()
    ckpt["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return _plain(ckpt, "checkpoint")


def make_ensemble_checkpoint(
    members: list[dict[str, Any]],
    weights: list[float],
    *,
    thresholds: dict[str, float],
    threshold_policy: ThresholdPolicy | dict[str, Any],
    metrics: dict[str, float],
    **meta: Any,
) -> dict[str, Any]:
    """The checkpoint of an ensemble of single-model checkpoints ``members`` (each keeps its
    own arch, weights and normalisation) averaged with ``weights``; ``thresholds`` and
    ``metrics`` are the ensemble's own, on its averaged validation probabilities."""
    clash = sorted(RESERVED_KEYS & set(meta))
    if clash:
        raise ValueError(f"make_ensemble_checkpoint: meta key(s) {clash} are reserved")
    if not members or len(members) != len(weights):
        raise ValueError(f"make_ensemble_checkpoint: {len(members)} members, "
                         f"{len(weights)} weights")
    if any(m.get("kind") == ENSEMBLE for m in members):
        raise ValueError("make_ensemble_checkpoint: a member cannot be an ensemble itself")
    missing = [n for n in PROB_NAMES if n not in thresholds]
    if missing:
        raise ValueError(f"make_ensemble_checkpoint: thresholds lack {missing}")
    if isinstance(threshold_policy, ThresholdPolicy):
        threshold_policy = threshold_policy.to_dict()
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ENSEMBLE,
        # a member's provenance is the ensemble's: no copies of versions and dates in each
        "members": [{k: v for k, v in m.items() if k not in ("versions", "created")}
                    for m in members],
        "member_weights": [float(w) for w in weights],
        "class_names": list(GRADED),
        "prob_names": list(PROB_NAMES),
        "source_channels": list(CHANNELS),
        "source_size": members[0].get("source_size", DEFAULT_SOURCE_SIZE),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "threshold_policy": threshold_policy,
        "val_metrics": dict(metrics),
    }
    return _stamped(ckpt, meta)


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    ckpt = _plain(ckpt, "checkpoint")
    # never a half-written model or a stray temp file, even on Ctrl-C or a full disk
    with atomic_path(path, fsync=True) as tmp:
        torch.save(ckpt, tmp)
    log.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` on the CPU.

    Raises :class:`CheckpointError` for a missing file, a file that is not a PyTorch save,
    one that needs arbitrary unpickling (refused for safety), a dict that is not one of ours,
    or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Model file {path} does not exist{' (it is a folder)' if path.is_dir() else ''}. "
            "Check the path, or export a model first with export_best.py."
        )
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch.save) triggers a protocol warning before being judged.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e).lower()
        # "Unsupported operand": a bare pickle stream, not a torch.save file at all.
        if "weights only" in text and "unsupported operand" not in text:
            raise CheckpointError(
                f"Model file {path} was refused for safety: it contains Python objects that "
                "only load by running arbitrary code, and we load only plain checkpoints with "
                "torch.load(weights_only=True). Re-export the model with export_best.py, or "
                "use a .pth written by this project."
            ) from e
        raise _not_torch(path, e) from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise _not_torch(path, e) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"Model file {path} is a PyTorch file but not a MILAN eraser model "
            f"(no 'format': '{FORMAT}' entry). Use a .pth written by export_best.py."
        )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(
            f"Model file {path} has no valid format version ({version!r}); it is damaged or "
            "was not written by export_best.py. Re-export the model."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"Model file {path} has format version {version!r}, newer than this code "
            f"understands ({FORMAT_VERSION}). Update the project code to load it."
        )
    problem = _structure_problem(ckpt)
    if problem:
        raise CheckpointError(
            f"Model file {path} is incomplete: {problem}. Re-export the model with "
            "export_best.py."
        )
    tta = ckpt.get("tta")
    for key, thresholds in (("thresholds", ckpt["thresholds"]),
                            ("tta thresholds", tta.get("thresholds") if isinstance(tta, dict)
                             else None)):
        if thresholds is None and key != "thresholds":
            continue
        problem = _thresholds_problem(thresholds)
        if problem:
            raise CheckpointError(
                f"Model file {path} has unusable {key}: {problem}; every class needs one "
                f"({', '.join(PROB_NAMES)}). Re-export the model with export_best.py."
            )
    return ckpt


def _structure_problem(ckpt: dict[str, Any]) -> str | None:
    if ckpt.get("kind") != ENSEMBLE:
        missing = [k for k in REQUIRED_KEYS if k not in ckpt]
        return f"it lacks {missing}" if missing else None
    missing = [k for k in ENSEMBLE_KEYS if k not in ckpt]
    if missing:
        return f"the ensemble lacks {missing}"
    members, weights = ckpt["members"], ckpt["member_weights"]
    if not isinstance(members, list) or not members or not isinstance(weights, list) \
            or len(weights) != len(members):
        return "the ensemble's members and member_weights do not match"
    for i, member in enumerate(members):
        lacking = ([k for k in REQUIRED_KEYS if k not in member] if isinstance(member, dict)
                   else list(REQUIRED_KEYS))
        if lacking:
            return f"ensemble member {i} lacks {lacking}"
    return None


def _thresholds_problem(thresholds: Any) -> str | None:
    if not isinstance(thresholds, dict):
        return f"{type(thresholds).__name__}, not a dict"
    missing = [n for n in PROB_NAMES if n not in thresholds]
    if missing:
        return f"no threshold for {', '.join(missing)}"
    bad = [n for n in PROB_NAMES if isinstance(thresholds[n], bool)
           or not isinstance(thresholds[n], (int, float)) or not 0.0 <= thresholds[n] <= 1.0]
    if bad:
        return f"{', '.join(f'{n} {thresholds[n]!r}' for n in bad)} (each must be in [0, 1])"
    return None


def _not_torch(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Model file {path} is not a readable PyTorch checkpoint (it is corrupt, truncated or "
        f"some other kind of file: {type(err).__name__}). Re-export or copy it again."
    )


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint"
                          ) -> InspectionModel | EnsembleModel:
    """Rebuild the model of a loaded checkpoint dict (CPU, eval mode): an
    :class:`InspectionModel`, or an :class:`~model.ensemble.EnsembleModel` of them."""
    if ckpt.get("kind") == ENSEMBLE:
        members = [model_from_checkpoint(m, f"{source} (member {i})")
                   for i, m in enumerate(ckpt["members"])]
        try:
            model = EnsembleModel(members, ckpt["member_weights"], ckpt["thresholds"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"Model file {source} holds an unusable ensemble ({e}). "
                                  "Re-export it with export_best.py.") from e
        model.meta = {k: v for k, v in ckpt.items() if k != "members"}
        model.meta["members"] = [{k: v for k, v in m.items() if k != "state_dict"}
                                 for m in ckpt["members"]]
        return model.eval()
    try:
        cfg = arch_from_dict(ckpt["arch"])
        net = build_model(cfg)
        net.load_state_dict(ckpt["state_dict"])
        norm = ckpt["normalization"]
        model = InspectionModel(net, cfg, norm["mean"], norm["std"], ckpt["thresholds"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"Model file {source} does not describe a model this code can rebuild ({e}). "
            "Re-export it with export_best.py from the same project version."
        ) from e
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval()


def load(path: str | os.PathLike, device: str | torch.device = "cpu"
         ) -> InspectionModel | EnsembleModel:
    """One call from a ``.pth`` to a ready-to-run model (eval mode, on ``device``): a single
    network or an ensemble, both taking raw erasers and giving the same outputs.

    ``device`` may be ``"auto"`` (CUDA when available). The result has ``.meta`` (the
    checkpoint minus ``state_dict``) and ``.thresholds``.
    """
    model = model_from_checkpoint(load_checkpoint(path), str(path))
    return model.to(_resolve_device(device))
