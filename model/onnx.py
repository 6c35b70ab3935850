"""ONNX export of an :class:`~model.inference.InspectionModel`: raw erasers in, grades out.

The graph takes the arrays exactly as delivered and does all preprocessing itself:

- input ``images``: ``uint8 (batch, height, width, 6)``, channels in
  :data:`~model.config.CHANNELS` order (``GRAY, AM, G, R, W, NORMAL``);
- inside: channel selection, the antialiased bilinear resize to the model's ``input_size``
  (:func:`model.preprocess.resize`: two matrix products in exact integer arithmetic, rounded
  back onto the uint8 grid like the training cache, so onnxruntime and PyTorch agree to the
  grey level), ``/ 255`` and the stored normalisation;
- output ``class_probs``: ``float32 (batch, 3)`` one-vs-all probabilities of print error,
  physical error, no defect (:data:`~model.metrics.GRADED` order);
- output ``defect_prob``: ``float32 (batch,)``.

Batch, height and width are dynamic (the resize makes any size work; 310 px is what the
models were trained from). The thresholds, class names and provenance ride along as ONNX
metadata (``session.get_modelmeta().custom_metadata_map``).

Export uses ``torch.onnx.export(..., dynamo=True)``, PyTorch's supported exporter (the resize's
weights are computed in the graph from the input's dynamic height and width). ``onnx`` and
``onnxruntime`` are imported only when used, so ``import model`` stays light.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .channels import CHANNELS
from .ensemble import EnsembleModel, parts
from .fileio import atomic_path
from .inference import InspectionModel
from .metrics import GRADED

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, str] = ("class_probs", "defect_prob")
DEFAULT_TOLERANCE = 1e-4
"""Largest accepted |onnxruntime - PyTorch| probability difference (both float32)."""
MIN_OPSET = 18  # what the dynamo exporter targets; older runtimes lack its operators
DEFAULT_SOURCE_SIZE = 310
# Checkpoint entries copied into the ONNX metadata (JSON-encoded), when present.
META_KEYS = ("group", "study", "trial", "task", "channels", "input_size", "source_size",
             "thresholds", "threshold_policy", "data_hash", "split_hash", "created")


class OnnxExportError(Exception):
    """The model could not be exported to ONNX, or the ONNX file cannot be run."""


@dataclass(frozen=True)
class OnnxCheck:
    """How closely onnxruntime reproduced PyTorch on one set of inputs."""

    name: str
    n: int
    size: int
    max_diff: float
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def ok(self) -> bool:
        """Within tolerance (NaN never is)."""
        return bool(self.max_diff <= self.tolerance)


def onnx_metadata(model: InspectionModel | EnsembleModel) -> dict[str, str]:
    """String metadata for the ONNX file: I/O contract, thresholds and provenance (JSON)."""
    meta = dict(model.meta)
    if isinstance(model, EnsembleModel):
        meta["members"] = [{"weight": w, "task": m.cfg.task, "channels": list(m.cfg.channels),
                            "input_size": m.cfg.input_size} for m, w in model.parts]
    else:
        meta.setdefault("task", model.cfg.task)
        meta.setdefault("channels", list(model.cfg.channels))
        meta.setdefault("input_size", model.cfg.input_size)
    meta["thresholds"] = dict(model.thresholds)
    out = {key: json.dumps(meta[key]) for key in (*META_KEYS, "members") if key in meta}
    out.update(
        input=json.dumps({"name": INPUT_NAME, "dtype": "uint8",
                          "shape": ["batch", "height", "width", len(CHANNELS)],
                          "channels": list(CHANNELS)}),
        outputs=json.dumps({OUTPUT_NAMES[0]: list(GRADED), OUTPUT_NAMES[1]: "defect"}),
        class_names=json.dumps(list(GRADED)),
    )
    return out


def export_onnx(model: InspectionModel | EnsembleModel, path: str | os.PathLike, *,
                example_size: int | None = None) -> Path:
    """Write ``model`` as an ONNX graph on raw ``uint8 (B, H, W, 6)`` erasers to ``path``.

    The file is written atomically (temp file, then rename) and checked with
    ``onnx.checker``. ``example_size`` is the side of the example input used for tracing
    (default: the checkpoint's ``source_size``, else 310); any size runs afterwards. Raises
    :class:`OnnxExportError` when the exporter fails.
    """
    import onnx

    path = Path(path)
    net = copy.deepcopy(model).to("cpu").eval()  # never touch the caller's module or device
    example, dims = trace_input(model, example_size)
    try:
        program = torch.onnx.export(
            net, (example,), dynamo=True, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_shapes=(dims,), verbose=False)
        proto = program.model_proto
    except Exception as exc:  # the exporter raises many types; the caller needs one
        raise OnnxExportError(f"torch.onnx.export failed for this model: {exc}") from exc
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < MIN_OPSET:
        raise OnnxExportError(f"the exporter produced opset {opset}; the graph needs opset "
                              f"{MIN_OPSET} or newer")
    proto.doc_string = (f"MILAN eraser inspection CNN. Input {INPUT_NAME}: uint8 (batch, "
                        f"height, width, 6) raw erasers. Outputs {OUTPUT_NAMES[0]} (batch, 3) "
                        f"= {', '.join(GRADED)}; {OUTPUT_NAMES[1]} (batch,).")
    onnx.helper.set_model_props(proto, onnx_metadata(model))
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    log.info("wrote ONNX model %s (opset %d)", path, opset)
    return path


def trace_input(model: InspectionModel | EnsembleModel, size: int | None = None
                ) -> tuple[torch.Tensor, dict[int, Any]]:
    """The example raw batch and dynamic dimensions that ONNX and ``torch.export`` trace with.

    ``size``: the side of the example (default: the checkpoint's ``source_size``, else 310).
    At exactly a network's ``input_size`` the PyTorch path skips the resize and the trace
    would leave it out of the graph; the example is moved off every member's input size so
    the graph resizes whatever it is fed (a same-size antialiased resize is the identity, so
    nothing changes at that size).
    """
    size = int(size or model.meta.get("source_size") or DEFAULT_SOURCE_SIZE)
    while size in {m.cfg.input_size for m, _ in parts(model)}:
        size += 2
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("height", min=2),
            2: torch.export.Dim("width", min=2)}
    return torch.from_numpy(random_images(2, size, seed=0)), dims


def onnx_session(path: str | os.PathLike) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for ``path`` (:class:`OnnxExportError` if not)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types from C++
        raise OnnxExportError(f"onnxruntime cannot load {path}: {exc}") from exc


def run_onnx(session: Any, images: np.ndarray,
             batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(class_probs (N, 3), defect_prob (N,))`` from onnxruntime for raw ``uint8`` images."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    parts = [session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i:i + batch_size]})
             for i in range(0, len(images), batch_size)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def run_torch(model: InspectionModel | EnsembleModel, images: np.ndarray,
              batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The same two outputs from the PyTorch model (eval mode, float32, its own device)."""
    was_training = model.training
    model.eval()
    classes, defect = [], []
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                c, d = model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
                classes.append(c.float().cpu().numpy())
                defect.append(d.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(classes), np.concatenate(defect)


def compare_onnx(model: InspectionModel | EnsembleModel, session: Any, images: np.ndarray, *,
                 name: str = "inputs", tolerance: float = DEFAULT_TOLERANCE,
                 batch_size: int = 32) -> OnnxCheck:
    """Max |onnxruntime - PyTorch| over both outputs for raw ``uint8 (N, H, W, 6)`` images."""
    if images.ndim != 4 or images.shape[-1] != len(CHANNELS) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 6), got {images.dtype} "
                         f"{tuple(images.shape)}")
    ort_c, ort_d = run_onnx(session, images, batch_size)
    pt_c, pt_d = run_torch(model, images, batch_size)
    diff = max(float(np.max(np.abs(ort_c - pt_c))), float(np.max(np.abs(ort_d - pt_d))))
    if not (np.isfinite(ort_c).all() and np.isfinite(ort_d).all()):
        diff = float("nan")
    return OnnxCheck(name, len(images), int(images.shape[1]), diff, tolerance)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random raw erasers ``uint8 (n, size, size, 6)`` (for tracing and checks)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, len(CHANNELS)), dtype=np.uint8)
