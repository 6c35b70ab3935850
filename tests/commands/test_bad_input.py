"""The bad-input corpus: every command fed every kind of broken input ends with exit code 2
and a short message naming what is wrong (no traceback), and leaves an existing study
database, its artifacts and earlier exports exactly as they were."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

import analyze_data
import check_data as check
import dashboard
import export_best
import label_issues
import make_synthetic
import predict
import report
import run_study
import train
from data.synth import generate
from model.channels import CHANNELS
from search.space import SearchSpace
from search.study import study_names
from tests.conftest import write_delivery

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
MAINS: dict[str, Callable[[list[str]], int]] = {
    "check": check.main, "run_study": run_study.main, "export_best": export_best.main,
    "predict": predict.main, "train": train.main, "report": report.main,
    "analyze": analyze_data.main, "label_issues": label_issues.main,
    "dashboard": dashboard.main, "make_synthetic": make_synthetic.main}


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
                             "--out", str(root / "exports"), "--cache-dir", cache,
                             "--no-pt2"]) == 0
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


def _png_bytes(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims ``width`` x ``height`` pixels (IHDR patched)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:20], b[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    b[29:33] = zlib.crc32(bytes(b[12:29])).to_bytes(4, "big")
    return bytes(b)


def _as_pngs(d: Path) -> None:
    for f in (d / "arrays").glob("*.npy"):
        arr = np.load(f)
        for c, ch in enumerate(CHANNELS):
            Image.fromarray(arr[:, :, c]).save(d / f"{f.stem}_{ch}.png")
    shutil.rmtree(d / "arrays")


def png_bomb(d: Path) -> Path:  # past PIL's own limit: DecompressionBombError
    _as_pngs(d)
    (d / "E003_NORMAL.png").write_bytes(_png_bytes(20_000, 20_000))
    return d


def png_too_large(d: Path) -> Path:  # under PIL's limit, far over an eraser's
    _as_pngs(d)
    (d / "E003_NORMAL.png").write_bytes(_png_bytes(9_000, 9_000))
    return d


def _zip_arrays(d: Path, extra: dict[str, bytes] | None = None,
                compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(d / "arrays.zip", "w", compression) as zf:
        for f in sorted((d / "arrays").glob("*.npy")):
            if f.name not in (extra or {}):
                zf.write(f, f"arrays/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(f"arrays/{name}", data)
    shutil.rmtree(d / "arrays")
    return d / "arrays.zip"


def deflate_corrupt_member(d: Path) -> Path:  # zlib.error, not a CRC mismatch
    archive = _zip_arrays(d, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("arrays/E003.npy")
    raw = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start:start + 4] = b"\xff\xff\xff\xff"  # block type 11: reserved, invalid
    archive.write_bytes(bytes(raw))
    return d


def padded_member(d: Path) -> Path:  # a valid array, then bytes that are not part of it
    npy = (d / "arrays" / "E003.npy").read_bytes()
    _zip_arrays(d, {"E003.npy": npy + b"\x00" * 4096})
    return d


def huge_member(d: Path) -> Path:  # declares far more than any eraser needs
    npy = (d / "arrays" / "E003.npy").read_bytes()
    _zip_arrays(d, {"E003.npy": npy + b"\x00" * (33 * 2**20)}, zipfile.ZIP_DEFLATED)
    return d


def text_named_npy(d: Path) -> Path:
    (d / "arrays" / "E003.npy").write_text("id,label\nE003,1_0\n")
    return d


def huge_csv_field(d: Path) -> Path:  # csv's field limit is 131072 characters
    with open(d / "multi.csv", "a") as f:
        f.write("E099," + "1" * 200_000 + "\n")
    return d


def no_label_csv(d: Path) -> Path:  # the only CSV next to the images is something else
    (d / "binary.csv").unlink()
    (d / "multi.csv").unlink()
    (d / "notes.csv").write_text("when,who\nmonday,anna\n")
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
    "deflate-corrupt member": (deflate_corrupt_member, "E003.npy: is corrupt inside the archive"),
    "png decompression bomb": (png_bomb, "channel NORMAL declares far more pixels"),
    "png far over an eraser": (png_too_large, "channel NORMAL declares 9000x9000"),
    "padded zip member": (padded_member, "more bytes after its array"),
    "huge zip member": (huge_member, "refused unread"),
    "text file named .npy": (text_named_npy, "not a NumPy .npy file"),
    "csv field too long": (huge_csv_field, "multi.csv"),
    "no label csv": (no_label_csv, "notes.csv"),
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
    # (--force: the earlier export is there; the broken data must stop it all the same)
    return ["--study", "done", "--group", "team", "--storage", ws["url"], "--data", str(data),
            "--out", str(ws["root"] / "exports"), "--force", *cache]


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


DATA_CLIS = ("check", "run_study", "predict", "train", "export_best")
UNLABELLED_OK = {"no label csv": ("predict",)}  # predict scores unlabelled erasers too


@pytest.mark.parametrize("case, cli", [(case, cli) for case in DELIVERIES for cli in DATA_CLIS
                                       if (cli != "export_best" or case in EXPORT_CASES)
                                       and cli not in UNLABELLED_OK.get(case, ())])
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
    "raw @ in the password": ("postgresql+psycopg2://team:hunter2@Xq9@127.0.0.1:1/studies",
                              "URL-encode the password"),
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
    assert "hunter2" not in err and "Xq9" not in err  # nor the tail after a raw '@'
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
    # a pretrained backbone with no ImageNet weights to start from: said before any work
    bad.write_text('{"model": {"backbone": "resnet18", "input_size": 64}}')
    run_case("train", argv, ws, capsys, "no ImageNet weights for resnet18 on this machine")
    run_case("train", [*argv, "--weights", str(tmp_path / "nowhere")], ws, capsys,
             "does not exist")
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


# --- numeric flags: every value out of range is refused before anything is read or written -

def flag_argv(cli: str, ws: dict, out: Path) -> list[str]:
    """A valid dry run of each command (so a bad value that slipped through exits 0)."""
    good, url, cache = str(ws["good"]), ws["url"], ws["cache"]
    return {
        "run_study": ["--data", good, "--study", "fresh", "--storage", url, "--cache-dir", cache,
                      "--no-estimate", "--dry-run"],
        "train": ["--data", good, "--out", str(out / "train"), "--cache-dir", cache,
                  "--dry-run"],
        "predict": [str(ws["model"]), good, "--out", str(out / "preds.csv"), "--cache-dir",
                    cache, "--dry-run"],
        "export_best": ["--study", "done", "--group", "team", "--storage", url, "--out",
                        str(out / "exports"), "--dry-run"],
        "report": ["--study", "done", "--storage", url, "--out", str(out / "report"),
                   "--dry-run"],
        "analyze": [good, "--out", str(out / "analysis"), "--cache-dir", cache, "--dry-run"],
        "label_issues": [good, "--study", "done", "--storage", url, "--out",
                         str(out / "issues"), "--cache-dir", cache, "--no-estimate",
                         "--dry-run"],
        "dashboard": ["--storage", url, "--dry-run"],
        # no dry run: a value that slipped through makes four tiny erasers (and fails below)
        "make_synthetic": [str(out / "synthetic"), "--n", "4", "--size", "16", "--workers", "1"],
    }[cli]


def after_run(ws: dict, out: Path) -> None:
    """Nothing of a refused run exists: no new study, no output folder or file."""
    assert study_names(optuna.storages.RDBStorage(ws["url"])) == ["done", "empty"]
    assert not any(out.iterdir()), sorted(out.iterdir())


NUMERIC_CASES = [
    ("run_study", ["--n-trials", "0"], "--n-trials"),
    ("run_study", ["--epochs", "0"], "--epochs"),
    ("run_study", ["--epochs", "-3"], "--epochs"),
    ("run_study", ["--sizes", "0"], "--sizes"),
    ("run_study", ["--sizes", "32", "-8"], "--sizes"),
    ("run_study", ["--min-recall", "2"], "--min-recall"),
    ("run_study", ["--timeout", "-5"], "--timeout"),
    ("run_study", ["--test-fraction", "0.7"], "--test-fraction"),
    ("run_study", ["--val-fraction", "0.9"], "--val-fraction"),
    ("run_study", ["--val-fraction", "nan"], "--val-fraction"),
    ("run_study", ["--dashboard-port", "70000"], "--dashboard-port"),
    ("run_study", ["--seed", "-1"], "--seed"),
    ("train", ["--epochs", "0"], "--epochs"),
    ("train", ["--epochs", "-2"], "--epochs"),
    ("predict", ["--batch-size", "0"], "--batch-size"),
    ("export_best", ["--onnx-tolerance", "inf"], "--onnx-tolerance"),
    ("report", ["--trial", "-1"], "--trial"),
    ("analyze", ["--folds", "1"], "--folds"),
    ("label_issues", ["--epochs", "0"], "--epochs"),
    ("dashboard", ["--port", "-1"], "--port"),
]


@pytest.mark.parametrize("cli, extra, flag", NUMERIC_CASES,
                         ids=[f"{c} {' '.join(e)}" for c, e, _ in NUMERIC_CASES])
def test_numeric_flag_out_of_range(cli, extra, flag, ws, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    err = run_case(cli, [*flag_argv(cli, ws, out), *extra], ws, capsys, flag)
    assert "must be" in err
    after_run(ws, out)


def _numeric_flags(parser) -> list[tuple[str, type, int | str | None]]:
    return [(a.option_strings[-1], a.type, a.nargs) for a in parser._actions
            if a.type in (int, float) and a.option_strings and a.help != "==SUPPRESS=="]


# What every numeric flag accepts, written down here independently of the code: the
# property test below draws values outside it. A new numeric flag must be added here.
ACCEPTS: dict[str, tuple[float | None, float | None, bool]] = {  # (low, high, low is open)
    "--n-trials": (1, None, False), "--workers": (1, None, False),
    "--confirm": (0, None, False), "--confirm-seeds": (1, None, False),
    "--heartbeat": (1, None, False), "--epochs": (1, 10_000, False),
    "--sizes": (8, 1024, False), "--size": (8, 1024, False), "--timeout": (0, None, True),
    "--min-recall": (0, 1, True), "--val-fraction": (0, 0.5, True),
    "--test-fraction": (0, 0.4999, False), "--dashboard-port": (0, 65535, False),
    "--port": (0, 65535, False), "--seed": (0, 2**32 - 1, False),
    "--batch-size": (1, None, False), "--onnx-tolerance": (0, None, True),
    "--trial": (0, None, False), "--samples": (1, 64, False), "--folds": (2, 20, False),
    "--top": (0, 256, False), "--max-flagged": (1, None, False), "--n": (1, None, False),
    "--pack-size": (1, None, False), "--defect-rate": (0, 1, False), "--noise": (0, 1, False),
    "--fp-noise": (0, 1, False), "--subtle-rate": (0, 1, False),
    # where one command's flag differs from the others' of that name
    "make_synthetic --size": (16, 4096, False), "make_synthetic --seed": (0, None, False),
}
PARSERS = {"run_study": run_study, "train": train, "predict": predict,
           "export_best": export_best, "report": report, "analyze": analyze_data,
           "label_issues": label_issues, "dashboard": dashboard,
           "make_synthetic": make_synthetic}


def accepts(cli: str, flag: str) -> tuple[float | None, float | None, bool]:
    return ACCEPTS.get(f"{cli} {flag}", ACCEPTS[flag])


def invalid_values(rng: np.random.Generator, kind: type, low, high, low_open: bool,
                   n: int = 3) -> list[str]:
    """``n`` values outside [low, high] (low itself too when open); NaN/inf for floats."""
    values: list[float] = []
    if low is not None:
        values += [low - rng.integers(1, 10**6) if kind is int else
                   low - float(rng.uniform(1e-6, 1e3))]
        if low_open:
            values.append(low)
    if high is not None:
        values += [high + rng.integers(1, 10**6) if kind is int else
                   high + float(rng.uniform(1e-3, 1e3))]
    if kind is float:
        values += [math.nan, math.inf, -math.inf]
    picked = rng.choice(len(values), size=min(n, len(values)), replace=False)
    return [str(int(values[i])) if kind is int else repr(float(values[i])) for i in picked]


def test_the_property_table_covers_every_numeric_flag():
    flags = {f for mod in PARSERS.values() for f, _, _ in _numeric_flags(mod.build_parser())}
    plain = {k for k in ACCEPTS if " " not in k}
    assert flags == plain, flags ^ plain


@pytest.mark.parametrize("seed", range(3))
def test_random_invalid_values_for_every_numeric_flag(seed, ws, tmp_path, capsys):
    """Property: any value outside a numeric flag's range, for any command, ends in exit 2
    and a message naming the flag; never a traceback, a stored study or a written file."""
    rng = np.random.default_rng(seed)
    out = tmp_path / "out"
    out.mkdir()
    for cli, mod in PARSERS.items():
        for flag, kind, _ in _numeric_flags(mod.build_parser()):
            for value in invalid_values(rng, kind, *accepts(cli, flag)):
                run_case(cli, [*flag_argv(cli, ws, out), f"{flag}={value}"], ws, capsys, flag)
    after_run(ws, out)


# --- output places: checked before any work, earlier results never replaced silently -------

def test_output_paths_that_cannot_be_written(ws, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    model, good, cache = str(ws["model"]), str(ws["good"]), ws["cache"]
    cases = [
        ("predict", [model, good, "--out", str(out), "--cache-dir", cache], "is a folder"),
        ("predict", [model, good, "--out", str(a_file / "p.csv"), "--cache-dir", cache],
         "is a file, not a folder"),
        ("predict", [model, good, "--out", str(tmp_path / "p.csv"), "--cache-dir",
                     str(a_file)], "--cache-dir"),
        ("export_best", ["--study", "done", "--group", "team", "--storage", ws["url"],
                         "--out", str(a_file)], "--out"),
        ("train", ["--data", good, "--epochs", "1", "--out", str(a_file), "--cache-dir",
                   cache], "--out"),
        ("train", ["--data", good, "--epochs", "1", "--out", str(a_file / "x"),
                   "--cache-dir", cache], "is a file, not a folder"),
        ("check", [good, "--cache-dir", str(a_file)], "--cache-dir"),
        ("run_study", ["--data", good, "--study", "fresh", "--storage", ws["url"],
                       "--no-estimate", "--cache-dir", str(a_file)], "--cache-dir"),
        ("run_study", ["--data", good, "--study", "fresh", "--storage", ws["url"],
                       "--no-estimate", "--cache-dir", cache, "--artifact-dir", str(a_file)],
         "--artifact-dir"),
    ]
    for cli, argv, expect in cases:
        run_case(cli, argv, ws, capsys, expect)
    assert a_file.read_text() == "keep me\n"
    after_run(ws, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "out"]


def test_earlier_results_are_not_replaced_without_force(ws, tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    preds.write_text("earlier\n")
    run_case("predict", [str(ws["model"]), str(ws["good"]), "--out", str(preds),
                         "--cache-dir", ws["cache"]], ws, capsys, f"{preds} already exists")
    assert preds.read_text() == "earlier\n"
    # export_best into the folder of the earlier export: names both files
    err = run_case("export_best", ["--study", "done", "--group", "team", "--storage",
                                   ws["url"], "--out", str(ws["root"] / "exports")],
                   ws, capsys, "--force")
    assert "team.pth" in err and "team.md" in err
    # a second train.py run into the same --out
    out = tmp_path / "train"
    out.mkdir()
    (out / "model.pth").write_bytes(b"earlier")
    run_case("train", ["--data", str(ws["good"]), "--epochs", "1", "--out", str(out),
                       "--cache-dir", ws["cache"]], ws, capsys, "model.pth")
    assert sorted(p.name for p in out.iterdir()) == ["model.pth"]
    assert (out / "model.pth").read_bytes() == b"earlier"


def test_predict_replaces_with_force(ws, tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    preds.write_text("earlier\n")
    assert predict.main([str(ws["model"]), str(ws["good"]), "--out", str(preds),
                         "--cache-dir", ws["cache"], "--force"]) == 0
    assert preds.read_text().startswith("id,prob_defect")


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "-x"])
def test_train_name_stays_inside_out(name, ws, tmp_path, capsys):
    out = tmp_path / "deep" / "er" / "train"
    run_case("train", ["--data", str(ws["good"]), "--epochs", "1", "--out", str(out),
                       f"--name={name}", "--cache-dir", ws["cache"]], ws, capsys, "--name")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- studies: mistyped storages, spaces that cannot run, tampered artifacts ----------------

@pytest.mark.parametrize("cli", ["export_best", "report", "label_issues"])
def test_a_missing_sqlite_file_is_not_created(cli, ws, tmp_path, capsys):
    db = tmp_path / "missing.db"
    url = f"sqlite:///{db}"
    argv = {"export_best": ["--study", "done", "--group", "team", "--storage", url],
            "report": ["--study", "done", "--storage", url, "--out", str(tmp_path / "r")],
            "label_issues": [str(ws["good"]), "--study", "done", "--storage", url,
                             "--out", str(tmp_path / "l")]}[cli]
    run_case(cli, argv, ws, capsys, "does not exist")
    assert not db.exists() and not any(tmp_path.iterdir())


def test_a_stored_space_that_cannot_run_is_refused_with_what_to_do(ws, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    study.set_user_attr("space", SearchSpace(sizes=(32,), epochs=0).to_dict())
    argv = ["--data", str(ws["good"]), "--study", "old", "--storage", url, "--cache-dir",
            ws["cache"], "--no-estimate", "--n-trials", "1"]
    for extra in ([], ["--epochs", "1"]):  # corrected flags cannot change a stored space
        err = run_case("run_study", [*argv, *extra], ws, capsys, "cannot run")
        assert "epochs" in err and "--study" in err and "delete-study" in err
    assert optuna.load_study(study_name="old", storage=url).trials == []


def test_small_sets_that_cannot_be_stratified(ws, tmp_path, capsys):
    data = tmp_path / "eight"
    write_delivery(data, n=8, size=16)  # two erasers per X_Y class, five folds asked
    for cli, argv in (("run_study", ["--data", str(data), "--study", "eight", "--storage",
                                     ws["url"], "--no-estimate", "--dry-run"]),
                      ("train", ["--data", str(data), "--out", str(tmp_path / "t"),
                                 "--dry-run"])):
        err = run_case(cli, [*argv, "--cache-dir", str(tmp_path / "cache")], ws, capsys,
                       "too few")
        assert "--val-fraction" in err
    assert not (tmp_path / "t").exists()


def test_a_model_whose_thresholds_lack_a_class(ws, tmp_path, capsys):
    ckpt = torch.load(ws["model"], weights_only=True)
    del ckpt["thresholds"]["print_error"]
    path = tmp_path / "partial.pth"
    torch.save(ckpt, path)
    out = tmp_path / "preds.csv"
    run_case("predict", [str(path), str(ws["good"]), "--out", str(out), "--cache-dir",
                         ws["cache"]], ws, capsys, "print_error")
    assert not out.exists()


def test_a_tampered_trial_artifact(ws, tmp_path, capsys):
    art = tmp_path / "artifacts"
    shutil.copytree(ws["root"] / "artifacts", art)
    study = optuna.load_study(study_name="done", storage=ws["url"])
    artifact = study.best_trial.user_attrs["checkpoint_artifact"]
    (art / artifact).write_bytes(b"not a checkpoint any more")
    err = run_case("export_best", ["--study", "done", "--group", "team", "--storage",
                                   ws["url"], "--artifact-dir", str(art), "--out",
                                   str(tmp_path / "e")], ws, capsys, "stored weights of trial")
    assert artifact in err and "--trial" in err and "Re-export" not in err
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


def test_the_new_corpus_breaks_what_the_issue_names(tmp_path):
    """The raw errors the hostile corpus provokes: what the commands must now catch."""
    d = tmp_path / "z"
    write_delivery(d, n=12, size=16)
    deflate_corrupt_member(d)
    with zipfile.ZipFile(d / "arrays.zip") as zf, pytest.raises(zlib.error):
        zf.read("arrays/E003.npy")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(_png_bytes(20_000, 20_000)))
    d = tmp_path / "c"
    write_delivery(d, n=12, size=16)
    huge_csv_field(d)
    with pytest.raises(csv.Error, match="field larger than field limit"):
        list(csv.reader((d / "multi.csv").read_text().splitlines()))
