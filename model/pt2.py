"""The ``.pt2`` export: the graded model as a ``torch.export`` program a grader runs with
PyTorch alone.

Same contract as the ONNX graph (:mod:`model.onnx`): input ``uint8 (batch, height, width,
6)`` raw erasers, channels in :data:`~model.channels.CHANNELS` order; channel selection, the
exact integer resize and normalisation inside; outputs ``class_probs (batch, 3)`` in
:data:`~model.metrics.GRADED` order and ``defect_prob (batch,)``. Batch, height and width are
dynamic. Thresholds and provenance ride along as ``meta.json`` inside the archive. Running it
needs neither this repository nor ``timm``::

    import json, torch
    extra = {"meta.json": ""}
    program = torch.export.load("team.pt2", extra_files=extra)
    class_probs, defect_prob = program.module()(torch.from_numpy(images))
    thresholds = json.loads(extra["meta.json"])["thresholds"]
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ensemble import EnsembleModel
from .fileio import atomic_path
from .inference import InspectionModel
from .onnx import DEFAULT_TOLERANCE, OnnxCheck, onnx_metadata, run_torch, trace_input

log = logging.getLogger(__name__)

META_FILE = "meta.json"


class Pt2ExportError(Exception):
    """The model could not be exported with ``torch.export``, or the file cannot be run."""


def export_pt2(model: InspectionModel | EnsembleModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as a ``torch.export`` program on raw ``uint8 (B, H, W, 6)`` erasers.

    Atomic (temp file, then rename). Raises :class:`Pt2ExportError` when export fails.
    """
    path = Path(path)
    net = copy.deepcopy(model).to("cpu").eval()  # never touch the caller's module or device
    # frozen weights: the loaded program's outputs then need no .detach() before .numpy()
    net.requires_grad_(False)
    example, dims = trace_input(model)
    meta = {key: json.loads(value) for key, value in onnx_metadata(model).items()}
    try:
        with torch.no_grad():
            program = torch.export.export(net, (example,), dynamic_shapes=(dims,))
    except Exception as exc:  # torch.export raises many types; the caller needs one
        raise Pt2ExportError(f"torch.export failed for this model: {exc}") from exc
    buffer = io.BytesIO()  # torch.export.save wants a *.pt2 name or a buffer, not a temp file
    torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(meta)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    log.info("wrote torch.export program %s", path)
    return path


def load_pt2(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The runnable module of a ``.pt2`` file and its metadata (thresholds, provenance)."""
    extra = {META_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # a damaged archive fails deep inside torch
        raise Pt2ExportError(f"torch.export.load cannot read {path}: {exc}") from exc
    return program.module(), json.loads(extra[META_FILE] or "{}")


def run_pt2(module: torch.nn.Module, images: np.ndarray,
            batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(class_probs (N, 3), defect_prob (N,))`` from a loaded ``.pt2`` module."""
    classes, defect = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            c, d = module(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
            classes.append(c.numpy())
            defect.append(d.numpy())
    return np.concatenate(classes), np.concatenate(defect)


def compare_pt2(model: InspectionModel | EnsembleModel, module: torch.nn.Module,
                images: np.ndarray, *, name: str = "inputs",
                tolerance: float = DEFAULT_TOLERANCE) -> OnnxCheck:
    """Max |.pt2 - PyTorch model| over both outputs for raw ``uint8 (N, H, W, 6)`` images."""
    got_c, got_d = run_pt2(module, images)
    pt_c, pt_d = run_torch(model, images)
    diff = max(float(np.max(np.abs(got_c - pt_c))), float(np.max(np.abs(got_d - pt_d))))
    if not (np.isfinite(got_c).all() and np.isfinite(got_d).all()):
        diff = float("nan")
    return OnnxCheck(name, len(images), int(images.shape[1]), diff, tolerance)
