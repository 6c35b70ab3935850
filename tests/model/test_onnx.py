"""ONNX export: raw uint8 erasers in, graded probabilities out, equal to PyTorch in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import model
from model.onnx import INPUT_NAME, OUTPUT_NAMES, compare_onnx, export_onnx, random_images

SOURCE = 48  # tiny "delivered" erasers; the graph resizes them to the model's 32 px
THRESHOLDS = {"print_error": 0.4, "physical_error": 0.35, "no_defect": 0.6, "defect": 0.5}


def tiny_model(task: str, seed: int = 0, source: int = SOURCE) -> model.InspectionModel:
    torch.manual_seed(seed)
    cfg = model.CNNConfig(channels=("GRAY", "R", "NORMAL"), input_size=32, widths=(8, 16),
                          kernel_sizes=(3, 3), convs_per_block=1, dense_width=8,
                          activation="silu", task=task)
    net = model.build_model(cfg)
    net.train()  # a few passes so BatchNorm's running statistics are not the defaults
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    m = model.InspectionModel(net, cfg, [0.4, 0.3, 0.5], [0.2, 0.25, 0.1], THRESHOLDS)
    m.meta = {"source_size": source, "group": "team_x", "study": "s", "trial": 3}
    return m.eval()


# One export per head (exports take seconds). The binary model claims 32 px sources, its own
# input size, where PyTorch skips the resize: its graph must still resize other sizes.
@pytest.fixture(scope="module", params=[("binary", 32), ("multilabel", SOURCE),
                                        ("multiclass", SOURCE)], ids=lambda p: p[0])
def exported(request, tmp_path_factory):
    m = tiny_model(request.param[0], source=request.param[1])
    path = export_onnx(m, tmp_path_factory.mktemp("onnx") / "team_x.onnx")
    return m, path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_graph_contract_uint8_in_graded_probabilities_out(exported):
    _, path, session = exported
    (inp,) = session.get_inputs()
    assert inp.name == INPUT_NAME and inp.type == "tensor(uint8)"
    assert inp.shape[3] == 6 and all(isinstance(d, str) for d in inp.shape[:3])  # dynamic
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == ["print_error", "physical_error", "no_defect"]
    assert json.loads(props["thresholds"]) == pytest.approx(THRESHOLDS)
    assert json.loads(props["group"]) == "team_x"
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left nothing behind


@pytest.mark.parametrize(("batch", "size"), [(1, SOURCE), (3, SOURCE), (2, 32)])
def test_onnxruntime_matches_pytorch_on_random_inputs(exported, batch, size):
    m, _, session = exported
    images = random_images(batch, size, seed=batch)
    class_probs, defect = session.run(None, {INPUT_NAME: images})  # numpy in, numpy out
    assert class_probs.shape == (batch, 3) and defect.shape == (batch,)
    with torch.no_grad():
        expected = m.probs(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(class_probs, expected[:, :3], atol=1e-5)
    np.testing.assert_allclose(defect, expected[:, 3], atol=1e-5)
    # one-vs-all: no defect and defect are complements for every head
    np.testing.assert_allclose(class_probs[:, 2] + defect, 1.0, atol=1e-5)


def test_onnxruntime_matches_pytorch_on_synthetic_erasers(exported, synthetic_set):
    m, _, session = exported
    raw = synthetic_set.images(ids=synthetic_set.ids[:8]).transpose(0, 2, 3, 1)  # 64 px
    check = compare_onnx(m, session, np.ascontiguousarray(raw), name="synthetic")
    assert check.n == 8 and check.size == 64
    assert check.ok, check.max_diff


def test_compare_catches_a_different_model(exported):
    m, _, session = exported
    other = tiny_model(m.task, seed=1)  # same architecture, other weights
    check = compare_onnx(other, session, random_images(2, SOURCE, seed=7))
    assert not check.ok and check.max_diff > 1e-3


def test_a_split_stem_exports_and_matches(tmp_path):
    torch.manual_seed(1)
    cfg = model.CNNConfig(input_size=32, widths=(8, 16), kernel_sizes=(3, 3),
                          convs_per_block=1, dense_width=0, stem="split", task="multilabel")
    m = model.InspectionModel(model.build_model(cfg).eval(), cfg, [0.4] * 6, [0.2] * 6,
                              THRESHOLDS)
    m.meta = {"source_size": SOURCE}
    path = export_onnx(m.eval(), tmp_path / "split.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert compare_onnx(m, session, random_images(4, SOURCE, seed=2), name="random").ok



@pytest.fixture(scope="module")
def erasers_310() -> np.ndarray:
    """Eight full-size synthetic erasers (every class): flat regions, ink and relief, where a
    resize puts values near a rounding boundary that random noise seldom does."""
    from data.synth import render_eraser

    labels = ["0_0", "1_0", "0_1", "1_1"] * 2
    return np.stack([render_eraser(5, i, label)[0] for i, label in enumerate(labels)])


class _Resized(torch.nn.Module):
    """The preprocessing of a model up to the grey levels it rounds to (raw in, resized out)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return model.resize(x.permute(0, 3, 1, 2).float(), self.size)


@pytest.mark.parametrize("size", [32, 48, 64, 96, 128, 160, 224, 320])
def test_the_graph_rounds_real_erasers_to_the_same_grey_levels_at_every_size(size, erasers_310,
                                                                            tmp_path):
    net = _Resized(size).eval()
    program = torch.onnx.export(net, (torch.from_numpy(erasers_310[:2]),), dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                verbose=False)
    path = tmp_path / "resize.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: erasers_310})
    with torch.no_grad():
        expected = net(torch.from_numpy(erasers_310)).numpy()
    assert got.shape == (8, 6, size, size)
    np.testing.assert_array_equal(got, expected)  # bit for bit: no grey level apart


@pytest.mark.parametrize("channel_set", sorted(model.CHANNEL_SETS))
def test_every_channel_set_exports_within_tolerance_on_real_erasers(channel_set, erasers_310,
                                                                    tmp_path):
    torch.manual_seed(0)
    channels = model.CHANNEL_SETS[channel_set]
    cfg = model.CNNConfig(channels=channels, input_size=48, widths=(8, 16, 32),
                          kernel_sizes=(3, 3, 3), convs_per_block=2, dense_width=0,
                          task="multilabel")
    n = len(channels)
    m = model.InspectionModel(model.build_model(cfg).eval(), cfg, [0.4] * n, [0.2] * n,
                              THRESHOLDS)
    m.meta = {"source_size": 310}
    session = ort.InferenceSession(str(export_onnx(m.eval(), tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    check = compare_onnx(m, session, erasers_310, name="synthetic")
    assert check.ok and check.max_diff < 1e-5, check.max_diff
