"""The bad-input corpus: every command fed every kind of broken input ends with exit code 2
and a short message naming what is wrong (no traceback), and leaves an existing study
database, its artifacts and earlier exports exactly as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

import check_data as check
import export_best
import predict
import report
import run_study
import train
from data.synth import generate
from model.channels import CHANNELS
from tests.conftest import write_delivery

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
MAINS: dict[str, Callable[[list[str]], int]] = {
    "check": check.main, "run_study": run_study.main, "export_best": export_best.main,
    "predict": predict.main, "train": train.main, "report": report.main}


class Evil:
    """Unpickling this runs a command: exactly what weights_only=True must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A team's folder after a search: studies.db (study 'done' with one trial, study 'empty'
    with none), artifacts/, exports/team.pth. Every case must leave these as they are."""
    root = tmp_path_factory.mktemp("bad_input")
    good = root / "good"
    generate(good, n=40, seed=2, size=32, defect_rate=0.5, workers=1)
    url = f"sqlite:///{root / 'studies.db'}"
    cache = str(root / "cache")
    common = ["--data", str(good), "--storage", url, "--cache-dir", cache, "--sizes", "32",
              "--no-estimate"]
    assert run_study.main([*common, "--study", "done", "--n-trials", "1", "--epochs", "1",
                           "--pruner", "none"]) == 0
    optuna.create_study(study_name="empty", storage=url)  # a study whose run never got going
    assert export_best.main(["--study", "done", "--group", "team", "--storage", url,
                             "--out", str(root / "exports"), "--cache-dir", cache]) == 0
    return {"root": root, "good": good, "url": url, "cache": cache,
            "model": root / "exports" / "team.pth"}


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file of the study database, its artifacts and the exports."""
    files = [root / "studies.db", *sorted((root / "artifacts").rglob("*")),
             *sorted((root / "exports").rglob("*"))]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files if f.is_file()}


# --- broken deliveries (the data issue's list) ---------------------------------------------

def _npy(folder: Path, name: str, arr: np.ndarray) -> None:
    np.save(folder / "arrays" / f"{name}.npy", arr)


def missing_path(d: Path) -> Path:
    shutil.rmtree(d)
    return d


def wrong_shape(d: Path) -> Path:
    _npy(d, "E003", np.zeros((16, 16, 5), np.uint8))
    return d


def wrong_dtype(d: Path) -> Path:
    _npy(d, "E003", np.zeros((16, 16, 6), np.float32))
    return d


def non_finite(d: Path) -> Path:
    arr = np.zeros((16, 16, 6), np.float32)
    arr[3, 4, 5] = np.nan
    _npy(d, "E003", arr)
    return d


def truncated_npy(d: Path) -> Path:
    f = d / "arrays" / "E003.npy"
    f.write_bytes(f.read_bytes()[:200])
    return d


def unreadable_png(d: Path) -> Path:
    for f in (d / "arrays").glob("*.npy"):
        arr = np.load(f)
        for c, ch in enumerate(CHANNELS):
            Image.fromarray(arr[:, :, c]).save(d / f"{f.stem}_{ch}.png")
    shutil.rmtree(d / "arrays")
    (d / "E003_NORMAL.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return d


def unknown_label(d: Path) -> Path:
    f = d / "multi.csv"
    f.write_text(f.read_text().replace("E002,1_0", "E002,2_0"))
    return d


def conflicting_duplicate(d: Path) -> Path:
    with open(d / "multi.csv", "a") as f:
        f.write("E001,1_1\n")  # E001 is 0_1 above
    return d


def empty_csv(d: Path) -> Path:
    (d / "binary.csv").unlink()
    (d / "multi.csv").write_text("")
    return d


def zip_traversal(d: Path) -> Path:
    with zipfile.ZipFile(d / "arrays.zip", "w") as zf:
        for f in sorted((d / "arrays").glob("*.npy")):
            zf.write(f, f"arrays/{f.name}")
        zf.writestr("../../evil.npy", (d / "arrays" / "E000.npy").read_bytes())
    shutil.rmtree(d / "arrays")
    return d


def corrupt_zip(d: Path) -> Path:
    shutil.rmtree(d / "arrays")
    (d / "arrays.zip").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    return d


DELIVERIES = {
    "missing path": (missing_path, "does not exist"),
    "wrong shape": (wrong_shape, "E003"),
    "wrong dtype": (wrong_dtype, "float32"),
    "non-finite values": (non_finite, "NaN"),
    "truncated npy": (truncated_npy, "E003"),
    "unreadable png": (unreadable_png, "channel NORMAL"),
    "unknown label": (unknown_label, "2_0"),
    "conflicting duplicate": (conflicting_duplicate, "E001"),
    "empty csv": (empty_csv, "multi.csv"),
    "zip traversal": (zip_traversal, "evil.npy"),
    "corrupt zip": (corrupt_zip, "arrays.zip"),
}


def data_argv(cli: str, data: Path, ws: dict, out: Path) -> list[str]:
    cache = ["--cache-dir", str(out / "cache")]  # a fresh cache: nothing was decoded before
    if cli == "check":
        return [str(data), *cache]
    if cli == "run_study":
        return ["--data", str(data), "--study", "other", "--storage", ws["url"],
                "--n-trials", "1", "--epochs", "1", "--no-estimate", *cache]
    if cli == "predict":
        return [str(ws["model"]), str(data), "--out", str(out / "preds.csv"), *cache]
    if cli == "train":
        return ["--data", str(data), "--epochs", "1", "--out", str(out / "train"), *cache]
    # export_best re-scores the trial on the study's data: here given (broken) with --data
    return ["--study", "done", "--group", "team", "--storage", ws["url"], "--data", str(data),
            "--out", str(ws["root"] / "exports"), *cache]


def run_case(cli: str, argv: list[str], ws: dict, capsys: pytest.CaptureFixture,
             expect: str) -> str:
    """Run one command in-process; exit code 2, a short message, nothing touched."""
    before = fingerprint(ws["root"])
    code = MAINS[cli](argv)
    out, err = capsys.readouterr()
    assert code == 2, f"{cli} {argv} -> {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert expect in err.replace("\n", " "), err
    assert 0 < len(err.splitlines()) <= 12, err  # one paragraph (a problem list for data)
    assert fingerprint(ws["root"]) == before, "the study, artifacts or exports changed"
    return err


# export_best only re-reads the study's data (with --data here): three cases suffice
EXPORT_CASES = ("missing path", "truncated npy", "corrupt zip")


@pytest.mark.parametrize("case, cli", [(case, cli) for case in DELIVERIES for cli in MAINS
                                       if cli not in ("export_best", "report")
                                       or (cli == "export_best" and case in EXPORT_CASES)])
def test_broken_delivery(cli, case, ws, tmp_path, capsys):
    data = tmp_path / "delivery"
    write_delivery(data, n=12, size=16)
    make, expect = DELIVERIES[case]
    make(data)
    if cli == "export_best" and case == "missing path":
        expect = "given with --data does not exist"
    run_case(cli, data_argv(cli, data, ws, tmp_path), ws, capsys, expect)
    assert not (tmp_path / "preds.csv").exists() and not (tmp_path / "train").exists()


def test_missing_label_file(ws, tmp_path, capsys):
    for cli in ("check", "run_study", "train"):
        argv = [*data_argv(cli, ws["good"], ws, tmp_path), "--labels", str(tmp_path / "x.csv")]
        run_case(cli, argv, ws, capsys, "x.csv")


# --- storages and studies -------------------------------------------------------------------

STORAGES = {
    "unknown scheme": ("redis://localhost/0", "unknown scheme 'redis'"),
    "not a URL": ("studies.db", "not a database URL"),
    "unreachable": ("postgresql+psycopg2://team:hunter2@127.0.0.1:1/studies",
                    "cannot open the storage"),
}


def study_argv(cli: str, study: str, url: str, ws: dict, out: Path) -> list[str]:
    if cli == "run_study":
        return ["--data", str(ws["good"]), "--study", study, "--storage", url, "--cache-dir",
                ws["cache"], "--dry-run"]
    if cli == "report":
        return ["--study", study, "--storage", url, "--out", str(out / "report")]
    return ["--study", study, "--group", "team", "--storage", url]


@pytest.mark.parametrize("cli", ["run_study", "export_best", "report"])
@pytest.mark.parametrize("case", list(STORAGES))
def test_bad_storage(cli, case, ws, tmp_path, capsys):
    url, expect = STORAGES[case]
    err = run_case(cli, study_argv(cli, "done", url, ws, tmp_path), ws, capsys, expect)
    assert "hunter2" not in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("cli", ["export_best", "report"])
def test_unknown_study(cli, ws, tmp_path, capsys):
    err = run_case(cli, study_argv(cli, "nope", ws["url"], ws, tmp_path), ws, capsys,
                   "no study 'nope'")
    assert "done" in err and "empty" in err  # the studies that do exist


@pytest.mark.parametrize("cli", ["export_best", "report"])
def test_study_with_no_finished_trial(cli, ws, tmp_path, capsys):
    run_case(cli, study_argv(cli, "empty", ws["url"], ws, tmp_path), ws, capsys,
             "no completed trial")
    assert not (tmp_path / "report").exists()


def test_export_of_a_trial_that_does_not_exist(ws, capsys):
    run_case("export_best", ["--study", "done", "--group", "team", "--storage", ws["url"],
                             "--trial", "99"], ws, capsys, "trial 99")


@pytest.mark.parametrize("group", ["../team", "team/a", "", "a" * 80, "-x"])
def test_bad_group_name(group, ws, capsys):
    run_case("export_best", ["--study", "done", f"--group={group}", "--storage", ws["url"],
                             "--out", str(ws["root"] / "exports")], ws, capsys, "--group")


def test_export_without_the_artifacts(ws, tmp_path, capsys):
    run_case("export_best", ["--study", "done", "--group", "team", "--storage", ws["url"],
                             "--artifact-dir", str(tmp_path)], ws, capsys, "--artifact-dir")


def test_resume_on_other_data(ws, tmp_path, capsys):
    other = tmp_path / "other"
    generate(other, n=40, seed=3, size=32, defect_rate=0.5, workers=1)
    run_case("run_study", ["--data", str(other), "--study", "done", "--storage", ws["url"],
                           "--cache-dir", str(tmp_path / "cache"), "--sizes", "32"],
             ws, capsys, "different data")


# --- model files ----------------------------------------------------------------------------

def not_ours(path: Path, tmp: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 4}, path)


def needs_unpickling(path: Path, tmp: Path) -> None:
    torch.save({"format": "milan-eraser-cnn", "payload": Evil(tmp / "pwned")}, path)


def truncated_model(path: Path, tmp: Path, good: Path | None = None) -> None:
    path.write_bytes(good.read_bytes()[:4000])


def plain_pickle(path: Path, tmp: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"format": "milan-eraser-cnn"}))


def text_file(path: Path, tmp: Path) -> None:
    path.write_text("not a model\n")


MODELS = {
    "missing": (None, "does not exist"),
    "not ours": (not_ours, "not a MILAN eraser model"),
    "needs unpickling": (needs_unpickling, "refused for safety"),
    "truncated": (truncated_model, "not a readable PyTorch checkpoint"),
    "plain pickle": (plain_pickle, "not a readable PyTorch checkpoint"),
    "text": (text_file, "not a readable PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_bad_model_file(case, ws, tmp_path, capsys):
    make, expect = MODELS[case]
    path = tmp_path / "model.pth"
    if make is truncated_model:
        truncated_model(path, tmp_path, ws["model"])
    elif make is not None:
        make(path, tmp_path)
    out = tmp_path / "preds.csv"
    run_case("predict", [str(path), str(ws["good"]), "--out", str(out), "--cache-dir",
                         ws["cache"]], ws, capsys, expect)
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()  # the pickled command never ran


def test_bad_train_config(ws, tmp_path, capsys):
    bad = tmp_path / "run.json"
    bad.write_text('{"model": {"depth": "deep"')  # truncated JSON
    argv = ["--data", str(ws["good"]), "--config", str(bad), "--out", str(tmp_path / "o"),
            "--cache-dir", ws["cache"]]
    run_case("train", argv, ws, capsys, "run.json")
    bad.write_text('{"model": {"no_such_option": 1}}')
    run_case("train", argv, ws, capsys, "run.json")
    for not_a_run in ("[1, 2]", '{"train": 3}', '"model"'):  # valid JSON, wrong shape
        bad.write_text(not_a_run)
        run_case("train", [*argv, "--epochs", "1"], ws, capsys, "not a valid run configuration")
    assert not (tmp_path / "o").exists()


# --- the same through real processes: nothing but the message reaches stderr ---------------

@pytest.mark.parametrize("argv, expect", [
    (["check_data.py", "{data}", "--cache-dir", "{tmp}/cache"], "E003"),
    (["predict.py", "{evil}", "{data}", "--cache-dir", "{tmp}/cache"], "refused for safety"),
    (["export_best.py", "--study", "done", "--group", "team", "--storage",
      "postgresql+psycopg2://team:hunter2@127.0.0.1:1/studies"], "cannot open the storage"),
], ids=["check", "predict", "export_best"])
def test_no_traceback_reaches_stderr(argv, expect, ws, tmp_path):
    data = tmp_path / "delivery"
    write_delivery(data, n=12, size=16)
    truncated_npy(data)
    evil = tmp_path / "evil.pth"
    needs_unpickling(evil, tmp_path)
    argv = [a.format(data=data, tmp=tmp_path, evil=evil) for a in argv]
    before = fingerprint(ws["root"])
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert expect in proc.stderr.replace("\n", " "), proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert fingerprint(ws["root"]) == before
    assert not (tmp_path / "pwned").exists()


def test_the_corpus_builds_what_it_claims(tmp_path):
    """Guard against a corpus that is broken in the wrong way (or not at all)."""
    d = tmp_path / "d"
    write_delivery(d, n=12, size=16)
    assert "E002,1_0" in (d / "multi.csv").read_text()
    assert "E001,0_1" in (d / "multi.csv").read_text()
    zip_traversal(d)
    assert "../../evil.npy" in zipfile.ZipFile(d / "arrays.zip").namelist()
