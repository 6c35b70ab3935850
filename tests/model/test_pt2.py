"""The .pt2 export: a torch.export program on raw uint8 erasers that a grader runs with
PyTorch alone, equal to the .pth model at every input size, also outside this repository."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest

import model
from model.onnx import random_images
from model.pt2 import META_FILE, Pt2ExportError, compare_pt2, export_pt2, load_pt2
from tests.fresh_env import isolated_python

from .shared import CFG, MEAN, STD, THRESHOLDS, trained_net

SOURCE = 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    m = model.InspectionModel(trained_net(), CFG, MEAN, STD, THRESHOLDS).eval()
    m.meta = {"source_size": SOURCE, "group": "team_x", "study": "s", "trial": 3}
    return m, export_pt2(m, tmp_path_factory.mktemp("pt2") / "team_x.pt2")


@pytest.mark.parametrize(("batch", "size"), [(1, SOURCE), (3, SOURCE), (2, 32), (2, 310)])
def test_pt2_matches_pytorch_at_any_batch_and_size(exported, batch, size):
    m, path = exported
    module, meta = load_pt2(path)
    check = compare_pt2(m, module, random_images(batch, size, seed=batch))
    assert check.ok, check.max_diff
    assert meta["thresholds"] == pytest.approx(THRESHOLDS) and meta["group"] == "team_x"


def test_a_damaged_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a torch.export archive")
    with pytest.raises(Pt2ExportError, match="cannot read"):
        load_pt2(bad)


def test_pt2_runs_with_torch_alone_outside_this_repository(exported, tmp_path):
    m, path = exported
    images = random_images(2, SOURCE, seed=7)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, torch
        assert "model" not in sys.modules and not any("timm" in m for m in sys.modules)
        extra = {{"{META_FILE}": ""}}
        run = torch.export.load({str(path)!r}, extra_files=extra).module()
        class_probs, defect_prob = run(torch.from_numpy(np.load("images.npy")))
        np.save("out.npy", torch.cat([class_probs, defect_prob[:, None]], 1).numpy())
        print(json.loads(extra["{META_FILE}"])["group"])
    """)
    python = isolated_python(tmp_path / "venv", ["torch", "numpy"])
    done = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "team_x"
    expected = model.predict(m, images)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-4)
    # and the environment really lacks this project's other packages
    probe = subprocess.run([str(python), "-I", "-c", "import timm"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'timm'" in probe.stderr
