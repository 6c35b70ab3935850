"""The terminal side of a running study (cli.study): what --workers returns."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cli import study as cli_study
from model.pretrained import WeightFinder
from search.space import SearchSpace


@pytest.mark.parametrize("codes, finished, expect", [
    ([0, 0], 4, 0),
    ([0, -9], 4, 0),  # a worker was killed, another ran its trial: the study holds its total
    ([0, -9], 3, 1),  # ... and the total was not reached
])
def test_workers_exit_code_follows_the_study(codes, finished, expect, monkeypatch, capsys):
    session = SimpleNamespace(study=object(), storage_url="sqlite:///x.db")
    monkeypatch.setattr(cli_study, "start_workers", lambda *a, **k: [])
    monkeypatch.setattr(cli_study, "supervise", lambda *a, **k: codes)
    monkeypatch.setattr(cli_study, "n_finished", lambda study: finished)
    assert cli_study.run_workers("run_study.py", [], session, 2, 4, None) == expect
    err = capsys.readouterr().err
    assert ("-9" in err) == (codes != [0, 0])


def test_artifact_dir_problem(tmp_path):
    (tmp_path / "artifacts").write_text("not a folder")
    assert "--artifact-dir" in cli_study.artifact_dir_problem(f"sqlite:///{tmp_path / 's.db'}")
    assert cli_study.artifact_dir_problem(f"sqlite:///{tmp_path / 'new' / 's.db'}") is None
    assert cli_study.artifact_dir_problem("not a url ::") is None


def test_families_say_what_is_searched_and_what_lacks_weights(backbone_weights):
    finder = WeightFinder(backbone_weights)
    fam = cli_study.choose_families(["scratch", "frozen"], None, finder,
                                    default=("tf_efficientnet_lite0", "resnet18"))
    assert fam.scratch and fam.modes == ("frozen",) and fam.found == ("tf_efficientnet_lite0",)
    space = SearchSpace(backbones=fam.found, backbone_modes=fam.modes)
    assert fam.lines(space) == [
        "family  scratch CNN, tf_efficientnet_lite0 (ImageNet, frozen)",
        "note    no ImageNet weights here for resnet18 and none to download (offline?): "
        "searching without them. Give them with --weights or ERASER_WEIGHTS (files named "
        "<backbone>.pth or .safetensors)."]
    none = cli_study.choose_families(["scratch", "frozen"], ["none"], finder, default=("x",))
    assert none.wanted == () and none.lines(SearchSpace()) == ["family  scratch CNN"]
    worker = cli_study.choose_families(["scratch", "frozen"], None, finder,
                                       default=("tf_efficientnet_lite0",), look=False)
    assert worker.found == ()  # a worker trains the stored space: it looks for nothing


def test_demo_data_are_made_once_and_remade_at_another_size(tmp_path, capsys):
    folder = tmp_path / "demo_data"
    cli_study.ensure_demo_data(folder, n=6, seed=0, subtle_rate=0.25)
    labels = folder / "labels_multiclass.csv"
    stamp = labels.stat().st_mtime_ns
    cli_study.ensure_demo_data(folder, n=6, seed=0, subtle_rate=0.25)
    assert labels.stat().st_mtime_ns == stamp  # reused
    cli_study.ensure_demo_data(folder, n=8, seed=0, subtle_rate=0.25)  # an older demo's size
    assert len(labels.read_text().splitlines()) == 9
    assert capsys.readouterr().out.count("making the synthetic demo set") == 2
