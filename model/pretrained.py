"""Where a backbone's ImageNet weights come from, and how they get into the network.

A backbone is never trained from a silent random start: :func:`load_pretrained` needs a weight
file, and :class:`WeightFinder` says where one is, first match wins:

1. the user's own files (``--weights PATH`` or the ``ERASER_WEIGHTS`` environment variable):
   a file named after the timm model (``tf_efficientnet_lite0.pth``, ``resnet18.safetensors``,
   ``resnet18.a1_in1k.bin``) or a folder holding such files;
2. the Hugging Face cache that timm downloads into (``timm/<model>.<tag>``);
3. where the machine is online, :meth:`WeightFinder.fetch` downloads into that cache.

The files hold timm's layout for three input channels; timm's own loader adapts the stem to
the configured channels (RGB filters averaged and repeated, ``timm.models.adapt_input_conv``)
and drops the ImageNet classifier.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .config import BACKBONES, BackboneConfig, PatchConfig, PretrainedConfig

log = logging.getLogger(__name__)

WEIGHTS_ENV = "ERASER_WEIGHTS"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_HOST = "huggingface.co"


class WeightsError(Exception):
    """A backbone's weights are missing or unusable; the message is user-facing."""


def hub_id(name: str) -> str:
    """The Hugging Face repository timm takes ``name``'s default ImageNet weights from."""
    import timm  # see model.net._backbones: timm is imported on first use only

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(f"timm has no pretrained weights for {name}")
    return cfg.hf_hub_id


def _match(file: Path) -> str | None:
    """The backbone a weight file is named after (``resnet18.a1_in1k.safetensors``)."""
    if file.suffix.lower() not in WEIGHT_SUFFIXES:
        return None
    stem = file.name[: -len(file.suffix)]
    return next((b for b in sorted(BACKBONES, key=len, reverse=True)
                 if stem == b or stem.startswith(b + ".")), None)


class WeightFinder:
    """Finds the ImageNet weight file of each backbone (see the module docstring).

    ``weights``: the user's file or folder (None: ``$ERASER_WEIGHTS``, else none). Raises
    :class:`WeightsError` when that path does not exist or names no known backbone.
    """

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        given = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
        self.given = Path(given) if given else None
        self.user: dict[str, Path] = {}
        if self.given is None:
            return
        where = "--weights" if weights is not None else WEIGHTS_ENV
        if not self.given.exists():
            raise WeightsError(f"{where} {self.given} does not exist; give a weight file "
                               "named after its backbone (e.g. tf_efficientnet_lite0.pth) or a "
                               "folder of them")
        files = sorted(self.given.iterdir()) if self.given.is_dir() else [self.given]
        for f in files:
            name = _match(f)
            if name and name not in self.user:
                self.user[name] = f
        if not self.user:
            raise WeightsError(
                f"{where} {self.given} holds no weight file named after a known backbone; "
                f"name it <backbone>{'|'.join(WEIGHT_SUFFIXES)} with <backbone> one of "
                f"{', '.join(BACKBONES)}")

    def file(self, name: str) -> Path | None:
        """The local weight file for ``name``, or None when there is none on this machine."""
        if name in self.user:
            return self.user[name]
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub_id(name), filename)
            if isinstance(cached, str):
                return Path(cached)
        return None

    def require(self, name: str) -> Path:
        """Like :meth:`file`, but raises :class:`WeightsError` saying what to do."""
        found = self.file(name)
        if found is None:
            raise WeightsError(
                f"no ImageNet weights for {name} on this machine: run the study once where it "
                f"is online (it downloads them), or give them with --weights or "
                f"{WEIGHTS_ENV} (a file named {name}.pth or .safetensors, or a folder of them)")
        return found

    def verified(self, name: str) -> Path:
        """Like :meth:`require`, and the file really loads into the backbone: commands check
        the weights before any work, not in their first trial (:func:`check_weights`)."""
        found = self.require(name)
        check_weights(name, found)
        return found

    def local(self, names: Iterable[str]) -> dict[str, Path]:
        """The weight file of each of ``names`` that is on this machine."""
        return {n: f for n in names if (f := self.file(n)) is not None}

    def fetch(self, names: Iterable[str]) -> dict[str, Path]:
        """The weight file of each of ``names`` that is here or can be downloaded now;
        the others are left out (and logged). Never raises for a missing network."""
        names = list(names)
        found = self.local(names)
        missing = [n for n in names if n not in found]
        if missing and online():
            from huggingface_hub import hf_hub_download

            for name in missing:
                try:
                    found[name] = Path(hf_hub_download(hub_id(name), "model.safetensors"))
                    log.info("downloaded the ImageNet weights of %s", name)
                except Exception as exc:  # any hub or network failure: that backbone is out
                    log.warning("could not download the weights of %s: %s", name, exc)
        return found


def online(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (and downloads are allowed)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:  # one quick connection: the hub client itself retries for half a minute offline
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_weights(name: str, file: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` unless ``file`` loads into backbone ``name`` as a trial
    would load it (a file named after a backbone may still be something else: a failed
    download, another model's weights, random bytes)."""
    from .net import build_model  # model.net imports this module's config only; no cycle

    cfg = BackboneConfig(backbone=name)
    try:
        load_pretrained(build_model(cfg), cfg, file)
    except WeightsError as exc:
        raise WeightsError(f"{exc}. Nothing was trained: give a weight file of timm's layout "
                           f"for {name} (--weights or {WEIGHTS_ENV}), or search without it "
                           "(--backbones with the others, or none).") from None


def load_pretrained(net: nn.Module, cfg: PretrainedConfig, file: str | os.PathLike) -> None:
    """Put the ImageNet weights in ``file`` into ``net``'s backbone (a :class:`BackboneNet`'s,
    or the feature stages a :class:`~model.patch.PatchNet` keeps), through timm's own loader
    (which adapts the stem to ``cfg``'s channels). Raises :class:`WeightsError` when the
    file is not weights of ``cfg.backbone``."""
    path = Path(file)
    target = net.backbone.body if isinstance(cfg, PatchConfig) else net.backbone
    try:
        state = _adapted_weights(cfg.backbone, cfg.channels, str(path),
                                 path.stat().st_mtime_ns)
        target.load_state_dict({k: state[k] for k in target.state_dict()}, strict=True)
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        raise WeightsError(f"{file} does not hold ImageNet weights of {cfg.backbone} in timm's "
                           f"layout ({type(exc).__name__}: {str(exc)[:200]})") from None
    log.info("%s starts from the ImageNet weights in %s", cfg.backbone, file)


@functools.lru_cache(maxsize=4)
def _adapted_weights(backbone: str, channels: tuple[str, ...], file: str,
                     mtime_ns: int) -> dict[str, torch.Tensor]:
    """timm's load of ``file`` into ``backbone`` for ``channels``, once per process and file
    version: every trial of a study with that backbone starts from the same weights, and
    reading the file into a second network took a noticeable share of a frozen trial.
    ``load_state_dict`` copies, so the cached tensors are never modified."""
    from .backbone import create_backbone

    source = create_backbone(BackboneConfig(backbone=backbone, channels=channels),
                             pretrained=True, pretrained_cfg_overlay={"file": file})
    return {k: v.detach() for k, v in source.state_dict().items()}
