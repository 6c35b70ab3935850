"""The notebook front end: committed without outputs, no logic of its own, and it runs top to
bottom (tiny synthetic set, CPU) in a real Jupyter kernel; plus its helpers in
``reporting.notebook``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure

from reporting.notebook import FolderMirror, show_dashboard, study_figures, synthetic_set

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
# Small enough for two CPU cores in well under a minute of training.
TINY = {"N_TRIALS": 2, "EPOCHS": 2, "SIZES": (32,), "N_ERASERS": 40, "SYNTH_SIZE": 48,
        "DEVICE": "cpu", "GROUP": "team_nb",
        "ONNX": False}  # export_best's own tests cover --onnx; here it would add ~10 s of CPU


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_committed_notebook_has_no_outputs(notebook):
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"cells {dirty} of {NOTEBOOK.name} hold outputs or execution counts: "
                       "clear all outputs before committing")
    assert "widgets" not in notebook.metadata  # saved widget state is an output too


def test_notebook_keeps_its_logic_in_the_library(notebook):
    for cell in code_cells(notebook):
        for line in cell.source.splitlines():
            assert not line.lstrip().startswith(("def ", "class ", "async def ")), line
    tagged = [c for c in code_cells(notebook) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and all(f"{k} =" in tagged[0].source for k in TINY)


def test_install_cell_clones_and_installs_on_a_fresh_runtime(notebook, tmp_path, monkeypatch):
    """Colab's case, without network: no checkout, optuna and kornia missing, torch there."""
    calls: list[list[str]] = []
    clone = tmp_path / "eraser-search"

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[0] == "git":  # a checkout holding the real requirements
            clone.mkdir()
            shutil.copy(ROOT / "requirements.txt", clone / "requirements.txt")
            (clone / "run_study.py").touch()

    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args):
        if name == "run_study":
            return (SimpleNamespace(origin=str(clone / "run_study.py")) if clone.exists()
                    else None)
        return None if name in ("optuna", "kornia") else real_find_spec(name, *args)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    monkeypatch.setattr(sys, "path", list(sys.path))
    install = code_cells(notebook)[0].source
    with pytest.raises(SystemExit, match="REPO_URL above is still the placeholder"):
        exec(install, {})  # the committed placeholder: said plainly, nothing cloned
    assert calls == []
    exec(install.replace("YOUR-TEAM/eraser-search", "team-a/eraser-search"), {})
    git, pip = calls
    assert git[:2] == ["git", "clone"] and git[-1] == str(clone) and sys.path[0] == str(clone)
    assert pip[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    packages = pip[5:]
    assert any(p.startswith("optuna-dashboard") for p in packages)
    assert not [p for p in packages if not p or p.startswith(("#", "torch"))]  # Colab's torch


def parameters(values: dict, work_dir: Path) -> str:
    lines = [f"{k} = {v!r}" for k, v in values.items()]
    return "\n".join(["from pathlib import Path", *lines, f"WORK_DIR = Path({str(work_dir)!r})"])


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(notebook, tmp_path, monkeypatch):
    """Executes every cell in a fresh python3 kernel (the venv's interpreter), as CI does;
    any cell error fails the test with the cell and its traceback."""
    from nbclient import NotebookClient

    nb = nbformat.from_dict(notebook)
    # Papermill-style: the injected cell right after the "parameters" cell overrides it.
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    keep = tmp_path / "drive" / "eraser-search"  # what Google Drive is on Colab
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        parameters({**TINY, "KEEP": str(keep)}, tmp_path / "run")))
    # The kernel imports the project like an installed package: the install cell skips.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("ERASER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell

    run = tmp_path / "run"
    assert (run / "exports" / "team_nb.pth").stat().st_size > 0
    # everything is kept: the study (a consistent SQLite copy), its artifacts, the export
    assert (keep / "exports" / "team_nb.pth").read_bytes() == \
        (run / "exports" / "team_nb.pth").read_bytes()
    kept = optuna.load_study(study_name="notebook", storage=f"sqlite:///{keep / 'studies.db'}")
    assert len(kept.trials) == len(optuna.load_study(
        study_name="notebook", storage=f"sqlite:///{run / 'studies.db'}").trials) >= 2
    assert (keep / "reports" / "heldout_predictions.csv").exists()
    rows = (run / "reports" / "heldout_predictions.csv").read_text().splitlines()
    assert rows[0].startswith("id,prob_defect,pred_defect") and len(rows) == 1 + 10
    text = "\n".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "requirements already installed" in text  # the install cell did not pip install
    assert "device cpu" in text and "erasers      40" in text
    assert "Best trials of 'notebook'" in text and "mean (graded)" in text
    images = [o for c in code_cells(nb) for o in c.outputs if "image/png" in o.get("data", {})]
    # class balance and sample grids (one per class, 4 here), Optuna's history and
    # intermediate values (importances need 2 completed trials), held-out PR and confusion
    assert len(images) >= 1 + 3 + 2 + 2
    widgets = [o for c in code_cells(nb) for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "tqdm.auto drew no notebook progress bar (is ipywidgets installed?)"
    iframes = [o for c in code_cells(nb) for o in c.outputs if "<iframe" in
               o.get("data", {}).get("text/html", "")]
    assert len(iframes) == 1
    # The dashboard's child process ends with the kernel: nothing is left listening.
    url = next(line.split()[-1] for line in text.splitlines() if line.startswith("serving "))
    assert_closed(int(url.split(":")[2].split("/")[0]))


def assert_closed(port: int, wait: float = 15.0) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        assert time.monotonic() < deadline, f"something still listens on port {port}"
        time.sleep(0.5)


# --- reporting.notebook ----------------------------------------------------------------------

def test_synthetic_set_is_made_once(tmp_path):
    folder = synthetic_set(tmp_path / "demo", n=6, seed=0, size=32)
    stamp = (folder / "labels_multiclass.csv").stat().st_mtime_ns
    assert synthetic_set(folder, n=6, seed=0, size=32) == folder
    assert (folder / "labels_multiclass.csv").stat().st_mtime_ns == stamp
    synthetic_set(folder, n=8, seed=0, size=32)  # more erasers: made again
    assert len((folder / "labels_multiclass.csv").read_text().splitlines()) == 1 + 8
    synthetic_set(folder, n=8, seed=0, size=24)  # other image size: made again
    assert np.load(next((folder / "arrays").glob("*.npy"))).shape == (24, 24, 6)


def test_study_figures_leave_out_what_the_study_cannot_show_yet():
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x * step, step)
        return x + trial.suggest_int("k", 0, 3)

    study = optuna.create_study(direction="maximize")
    assert study_figures(study) == {}
    study.optimize(objective, n_trials=1)
    assert set(study_figures(study)) == {"history", "intermediate values"}  # importances: >= 2
    study.optimize(objective, n_trials=2)
    figures = study_figures(study)
    assert set(figures) == {"history", "importances", "intermediate values"}
    assert all(isinstance(f, Figure) and f.axes[0].has_data() for f in figures.values())


def test_show_dashboard_uses_colabs_port_proxy_on_colab(monkeypatch):
    calls = []
    output = SimpleNamespace(serve_kernel_port_as_iframe=lambda port, **kw: calls.append(
        (port, kw)))
    monkeypatch.setitem(sys.modules, "google", SimpleNamespace(colab=SimpleNamespace(
        output=output)))
    monkeypatch.setitem(sys.modules, "google.colab", SimpleNamespace(output=output))
    show_dashboard(SimpleNamespace(port=8123, url="http://127.0.0.1:8123"), height=500)
    assert calls == [(8123, {"path": "/dashboard/", "height": "500"})]


def test_folder_mirror_keeps_a_consistent_copy_and_restores_it(tmp_path):
    work, keep = tmp_path / "work", tmp_path / "drive"
    work.mkdir()
    url = f"sqlite:///{work / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    (work / "artifacts").mkdir()
    (work / "artifacts" / "a.bin").write_bytes(b"weights")
    (work / "demo_data").mkdir()
    (work / "demo_data" / "big.npy").write_bytes(b"x" * 100)
    mirror = FolderMirror(work, keep)
    mirror(study, study.trials[0])  # as an Optuna callback
    assert (keep / "artifacts" / "a.bin").read_bytes() == b"weights"
    assert not (keep / "demo_data").exists()  # remade in seconds, not worth Drive space
    assert not list(keep.glob(".*partial"))
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{keep / 'studies.db'}"
                             ).best_value == 1.0
    assert not mirror.restore()  # the work folder has its study: nothing is overwritten
    fresh = FolderMirror(tmp_path / "new_runtime", keep)
    assert fresh.restore()
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{fresh.work / 'studies.db'}"
                             ).best_value == 1.0
