"""The network and its file formats: eraser input format, CNN config and builder, losses,
metrics, the ``.pth`` checkpoint (one network or an ensemble), loading for inference, ONNX and
``.pt2``.

The ground floor of the project: pure torch/numpy/scikit-learn, importing neither optuna nor
any other project package. Names are imported lazily (PEP 562): ``data`` imports
``model.channels`` and ``model.fileio``, and light commands (``make_synthetic.py``,
``check_data.py --dry-run``) must not pay for torch and scikit-learn through this file.
Typical use::

    import model
    m = model.load("team.pth")               # InspectionModel, eval mode
    probs = model.predict(m, images)         # (N, 4) in model.PROB_NAMES order
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "CHANNELS": "model.channels",
    "CHANNEL_SETS": "model.channels",
    "CLASS_CODES": "model.channels",
    "NATIVE_SIZE": "model.channels",
    "channel_indices": "model.channels",
    "CNNConfig": "model.config",
    "BackboneConfig": "model.config",
    "arch_from_dict": "model.config",
    "WeightFinder": "model.pretrained",
    "WeightsError": "model.pretrained",
    "load_pretrained": "model.pretrained",
    "TASKS": "model.config",
    "preprocess_raw": "model.preprocess",
    "resize": "model.preprocess",
    "resize_uint8": "model.preprocess",
    "build_model": "model.net",
    "complexity": "model.net",
    "describe": "model.net",
    "class_weight_from_targets": "model.losses",
    "make_loss": "model.losses",
    "pos_weight_from_targets": "model.losses",
    "GRADED": "model.metrics",
    "PROB_NAMES": "model.metrics",
    "ThresholdPolicy": "model.metrics",
    "choose_threshold": "model.metrics",
    "choose_thresholds": "model.metrics",
    "confusion": "model.metrics",
    "evaluate": "model.metrics",
    "probabilities": "model.metrics",
    "targets_to_truth": "model.metrics",
    "InspectionModel": "model.inference",
    "predict": "model.inference",
    "CheckpointError": "model.checkpoint",
    "FORMAT": "model.checkpoint",
    "FORMAT_VERSION": "model.checkpoint",
    "load": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "make_checkpoint": "model.checkpoint",
    "make_ensemble_checkpoint": "model.checkpoint",
    "EnsembleModel": "model.ensemble",
    "model_from_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "OnnxCheck": "model.onnx",
    "OnnxExportError": "model.onnx",
    "compare_onnx": "model.onnx",
    "export_onnx": "model.onnx",
    "onnx_session": "model.onnx",
    "run_onnx": "model.onnx",
    "Pt2ExportError": "model.pt2",
    "export_pt2": "model.pt2",
    "load_pt2": "model.pt2",
}

__all__ = [
    "CHANNELS",
    "CHANNEL_SETS",
    "CLASS_CODES",
    "FORMAT",
    "FORMAT_VERSION",
    "GRADED",
    "NATIVE_SIZE",
    "PROB_NAMES",
    "TASKS",
    "BackboneConfig",
    "CNNConfig",
    "CheckpointError",
    "EnsembleModel",
    "InspectionModel",
    "OnnxCheck",
    "OnnxExportError",
    "Pt2ExportError",
    "ThresholdPolicy",
    "WeightFinder",
    "WeightsError",
    "arch_from_dict",
    "build_model",
    "channel_indices",
    "choose_threshold",
    "choose_thresholds",
    "class_weight_from_targets",
    "compare_onnx",
    "complexity",
    "confusion",
    "describe",
    "evaluate",
    "export_onnx",
    "export_pt2",
    "load",
    "load_checkpoint",
    "load_pretrained",
    "load_pt2",
    "make_checkpoint",
    "make_ensemble_checkpoint",
    "make_loss",
    "model_from_checkpoint",
    "onnx_session",
    "pos_weight_from_targets",
    "predict",
    "preprocess_raw",
    "probabilities",
    "resize",
    "resize_uint8",
    "run_onnx",
    "save_checkpoint",
    "targets_to_truth",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model' has no attribute {name!r}")


if TYPE_CHECKING:  # static analysers see the real names
    from model.channels import CHANNEL_SETS, CHANNELS, CLASS_CODES, NATIVE_SIZE, channel_indices
    from model.checkpoint import (
        FORMAT,
        FORMAT_VERSION,
        CheckpointError,
        load,
        load_checkpoint,
        make_checkpoint,
        make_ensemble_checkpoint,
        model_from_checkpoint,
        save_checkpoint,
    )
    from model.config import TASKS, BackboneConfig, CNNConfig, arch_from_dict
    from model.ensemble import EnsembleModel
    from model.inference import InspectionModel, predict
    from model.losses import class_weight_from_targets, make_loss, pos_weight_from_targets
    from model.metrics import (
        GRADED,
        PROB_NAMES,
        ThresholdPolicy,
        choose_threshold,
        choose_thresholds,
        confusion,
        evaluate,
        probabilities,
        targets_to_truth,
    )
    from model.net import build_model, complexity, describe
    from model.onnx import (
        OnnxCheck,
        OnnxExportError,
        compare_onnx,
        export_onnx,
        onnx_session,
        run_onnx,
    )
    from model.preprocess import preprocess_raw, resize, resize_uint8
    from model.pretrained import WeightFinder, WeightsError, load_pretrained
    from model.pt2 import Pt2ExportError, export_pt2, load_pt2
