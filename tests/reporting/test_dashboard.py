"""Figures and notes per trial for optuna-dashboard, and launching the dashboard."""

import json
import urllib.request

import numpy as np
import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna_dashboard import save_note
from PIL import Image

import dashboard as dashboard_command
import run_study
from cli import study as cli_study
from reporting import dashboard, plots
from reporting.trial_report import (
    FIGURES,
    TrialReport,
    dashboard_hook,
    note_of,
)
from search.session import make_objective, prepare, run
from search.space import SearchSpace

# straight to the local dashboard, whatever $http_proxy says
fetch = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

SPACE = SearchSpace(sizes=(32,), depth=(2, 2), base_widths=(8,), batch_sizes=(16,), epochs=1,
                    patience=0, tasks=("multilabel",))


@pytest.fixture(scope="module")
def tiny_study(synthetic, tmp_path_factory):
    """Two finished trials of a real (tiny) study, made through the session API."""
    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp / 'studies.db'}"
    session = prepare(synthetic, study_name="tiny", storage_url=url, space=SPACE,
                      sampler="random", pruner="none", cache_dir=tmp / "cache")
    results = []
    run(session, make_objective(session, "cpu", on_result=[
        dashboard_hook(session), lambda t, r: results.append(r)]),
        n_trials=2)
    session.results = results  # the TrainResults, for tests of the hook alone
    return session, tmp


def test_each_finished_trial_has_small_figures_and_a_note(tiny_study):
    session, tmp = tiny_study
    study = session.study
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        metas = {m.filename: m for m in get_all_artifact_meta(t, storage=study._storage)}
        assert set(FIGURES) <= set(metas), sorted(metas)
        for name in FIGURES:
            assert metas[name].mimetype == "image/png"
            path = tmp / f"{t.number}_{name}"
            download_artifact(artifact_store=session.artifact_store,
                              artifact_id=metas[name].artifact_id, file_path=str(path))
            assert path.stat().st_size < 150_000, (name, path.stat().st_size)
            with Image.open(path) as img:
                assert img.format == "PNG" and max(img.size) <= 1200
        note = note_of(t, study)
        assert note.startswith(f"## Trial {t.number}: graded_ap")
        for text in (t.user_attrs["architecture"], f"{t.user_attrs['params']:,} parameters",
                     "| print error |", "| no defect |", "Stopped: completed 1 epochs",
                     "Best epoch **1** of 1"):
            assert text in note, text


def test_no_trial_figures_keeps_the_note_and_draws_nothing(synthetic, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert run_study.main(["--data", str(synthetic), "--study", "plain", "--storage", url,
                           "--n-trials", "1", "--epochs", "1", "--sizes", "32",
                           "--pruner", "none", "--cache-dir", str(tmp_path / "cache"),
                           "--no-trial-figures", "--no-estimate"]) == 0
    study = optuna.load_study(study_name="plain", storage=url)
    (trial,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    names = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert names and not names & set(FIGURES), names  # the weights, no figures
    assert note_of(trial, study).startswith(f"## Trial {trial.number}:")


def test_the_study_note_has_the_data_and_split_but_no_paths(tiny_study):
    session, tmp = tiny_study
    note = note_of(session.study)
    assert f"**{len(session.data.ids)} erasers**" in note
    assert session.split.hash in note and "| class 0_0 |" in note and "| defective |" in note
    assert str(tmp) not in note and "sqlite" not in note  # no machine paths, no storage URL


def test_a_resumed_study_keeps_a_note_the_user_edited(tiny_study, synthetic):
    session, tmp = tiny_study
    save_note(session.study, "my own words")
    again = prepare(synthetic, study_name="tiny", storage_url=session.storage_url, space=SPACE,
                    sampler="random", pruner="none", cache_dir=tmp / "cache")
    dashboard_hook(again)
    assert again.resumed and note_of(again.study) == "my own words"


def test_a_figure_that_fails_costs_neither_the_trial_nor_the_others(tiny_study, tmp_path,
                                                                     monkeypatch, caplog):
    session, _ = tiny_study

    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "pr_curve_plot", broken)
    study = optuna.create_study()  # in memory: the hook needs nothing of the real study
    trial = study.ask()
    TrialReport(session.data, FileSystemArtifactStore(str(tmp_path)))(trial,
                                                                     session.results[0])
    names = {m.filename for m in get_all_artifact_meta(trial)}
    assert names == set(FIGURES) - {"pr_curve.png"}
    assert note_of(trial).startswith(f"## Trial {trial.number}: graded_ap")
    assert "could not draw pr_curve.png" in caplog.text


def test_compact_png_keeps_grey_figures_exact(tmp_path):
    grey = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    Image.fromarray(np.repeat(grey, 20, axis=0)).save(tmp_path / "g.png")
    plots.compact_png(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img)[0], np.arange(256))


def test_only_loopback_is_quiet():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert dashboard.is_loopback(host) and dashboard.exposure_warning(host, 8080) is None
    for host in ("0.0.0.0", "192.168.1.5", "myhost.example"):
        warning = dashboard.exposure_warning(host, 8080)
        assert warning and "no authentication" in warning and host in warning


def test_start_serves_the_study_and_its_figures_then_stops(tiny_study, capsys):
    session, _ = tiny_study
    board = dashboard.start(session.storage_url, session.artifact_dir, port=0)
    try:
        assert board.running and board.port > 0
        with fetch(f"{board.url}/api/studies", timeout=30) as r:
            names = [s["study_name"] for s in json.load(r)["study_summaries"]]
        assert "tiny" in names
        t = session.study.best_trial
        meta = next(m for m in get_all_artifact_meta(t, storage=session.study._storage)
                    if m.filename == "curves.png")
        art = f"{board.url}/artifacts/{session.study._study_id}/{t._trial_id}/{meta.artifact_id}"
        with fetch(art, timeout=30) as r:
            assert r.headers["Content-Type"] == "image/png" and r.read(8) == b"\x89PNG\r\n\x1a\n"
        assert board.study_url(session.study).endswith(
            f"/dashboard/studies/{session.study._study_id}")
        # a second one on the same port says why it cannot start
        assert dashboard_command.main(["--storage", session.storage_url, "--port",
                               str(board.port)]) == 2
        assert f"cannot listen on 127.0.0.1:{board.port}" in capsys.readouterr().err
    finally:
        board.stop()
    assert not board.running


def test_dashboard_cli_checks_the_storage(tiny_study, tmp_path, capsys):
    session, _ = tiny_study
    assert dashboard_command.main(["--storage", session.storage_url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "(tiny)" in out and "dry run: would serve http://127.0.0.1:8080" in out
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert dashboard_command.main(["--storage", missing, "--dry-run"]) == 2
    assert "no SQLite storage" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_run_study_serves_the_dashboard_and_stops_it(tiny_study, synthetic, monkeypatch,
                                                     capsys):
    session, tmp = tiny_study
    started, held = [], []
    real_start = dashboard.start

    def spy(*args, **kwargs):
        started.append(real_start(*args, **kwargs))
        return started[-1]

    def hold(board):  # --keep-dashboard would wait for Ctrl-C here
        return lambda *exc: held.append(board.running)

    monkeypatch.setattr(dashboard, "start", spy)
    monkeypatch.setattr(cli_study, "hold_on_exit", hold)
    args = ["--data", str(synthetic), "--study", "tiny", "--storage", session.storage_url,
            "--n-trials", "2", "--cache-dir", str(tmp / "cache"), "--dashboard-port", "0",
            "--no-estimate"]
    # the study is complete: --dashboard alone would show it for no time, so it does not start
    assert run_study.main([*args, "--dashboard"]) == 0
    assert started == [] and "already holds 2 finished trials" in capsys.readouterr().out
    assert run_study.main([*args, "--keep-dashboard"]) == 0
    out = capsys.readouterr().out
    assert len(started) == 1 and held == [True]
    assert f"Watch it live:  {started[0].url}/dashboard/studies/" in out
    assert not started[0].running  # stopped once the hold ended
