"""Failures that must end: trials that all fail the same way stop the run (exit 1, the study
resumable, with --workers too), weights that do not load and labels with nothing to learn are
refused before the first trial (exit 2), a kind too rare to learn is said up to the model
card, and an empty study name is refused."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import check_data
import export_best
import run_study
from search import objective as objective_lib
from search.study import study_names
from training.loop import NonFiniteLossError

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
BROKEN = "the training loss became nan at epoch 1, step 1 (lr 0.003); stand-in for a cause"
# A run_study.py whose every trial fails the same way, as a --workers child runs it.
WRAPPER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import run_study
from search import objective
from training.loop import NonFiniteLossError

def broken(*args, **kwargs):
    raise NonFiniteLossError({BROKEN!r})

objective.train = broken
sys.exit(run_study.main())
"""


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from data.synth import generate

    folder = tmp_path_factory.mktemp("failures") / "erasers"
    generate(folder, n=48, seed=4, size=32, defect_rate=0.5, workers=1)
    return folder


def relabel(delivery: Path, folder: Path, change) -> Path:
    """A copy of ``delivery`` whose multi-class label of each eraser is ``change(label)``
    (and no binary CSV)."""
    shutil.copytree(delivery / "arrays", folder / "arrays")
    with open(delivery / "labels_multiclass.csv") as f:
        rows = list(csv.reader(f))[1:]
    (folder / "labels.csv").write_text("ID,label\n" + "".join(f"{k},{change(v)}\n"
                                                              for k, v in rows))
    return folder


def args(data: Path, tmp_path: Path, *extra: str, study: str = "f") -> list[str]:
    return ["--data", str(data), "--study", study, "--storage",
            f"sqlite:///{tmp_path / 'studies.db'}", "--n-trials", "3", "--epochs", "1",
            "--sizes", "32", "--cache-dir", str(tmp_path / "cache"), "--no-estimate",
            "--pruner", "none", *extra]


def test_trials_failing_the_same_way_stop_the_run_and_the_study_resumes(delivery, tmp_path,
                                                                        monkeypatch, capsys):
    def broken(*a, **k):
        raise NonFiniteLossError(BROKEN)

    monkeypatch.setattr(objective_lib, "train", broken)
    assert run_study.main(args(delivery, tmp_path, "--n-trials", "20")) == 1
    err = capsys.readouterr().err
    assert "stopped: 3 trials in a row failed the same way" in err and "stand-in" in err
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs["fail_cause"] for t in study.trials} == {"non_finite_loss"}
    monkeypatch.undo()  # the cause is fixed: the same command resumes the study
    assert run_study.main(args(delivery, tmp_path, "--n-trials", "2")) == 0
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


def test_with_workers_each_stops_and_the_run_says_so(delivery, tmp_path, monkeypatch, capsys):
    wrapper = tmp_path / "run_study.py"
    wrapper.write_text(WRAPPER)
    monkeypatch.setattr(run_study, "__file__", str(wrapper))  # what the workers run
    assert run_study.main(args(delivery, tmp_path, "--n-trials", "40", "--workers", "2",
                               "--no-trial-figures")) == 1
    err = capsys.readouterr()
    assert "kept failing the same way" in err.err
    assert err.out.count("trials in a row failed the same way") == 2  # one line per worker
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert 3 <= len(failed) <= 6 and len(study.trials) == len(failed)


def test_weights_that_do_not_load_are_refused_before_the_study(delivery, tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "resnet18.pth").write_bytes(bytes(range(256)) * 64)  # not a weight file
    assert run_study.main(args(delivery, tmp_path, "--families", "frozen", "--backbones",
                               "resnet18", "--weights", str(weights))) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "resnet18.pth does not hold ImageNet weights of resnet18" in err
    assert "Nothing was trained" in err and "Traceback" not in err
    assert not (tmp_path / "studies.db").exists() or study_names(
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")) == []


def test_labels_without_a_defect_are_refused_by_check_and_search(delivery, tmp_path, capsys):
    data = relabel(delivery, tmp_path / "good_only", lambda label: "0_0")
    assert check_data.main([str(data), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "hold 0 defective erasers of 48" in err and "NOT USABLE" in err
    assert run_study.main(args(data, tmp_path)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "0 defective erasers" in err and "Nothing was trained" in err
    assert not (tmp_path / "studies.db").exists()


def test_a_kind_too_rare_to_learn_is_said_up_to_the_model_card(delivery, tmp_path, capsys):
    # every physical defect relabelled away: print errors can still be learnt
    data = relabel(delivery, tmp_path / "print_only", lambda label: f"{label[0]}_0")
    assert check_data.main([str(data), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "no physical defects" in " ".join(capsys.readouterr().out.split())
    assert run_study.main(args(data, tmp_path, "--n-trials", "1")) == 0
    out = capsys.readouterr().out
    assert "WARNING the training part holds no physical defects" in out
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert optuna.load_study(study_name="f", storage=url).user_attrs["ungradable"] == {
        "physical_error": 0}
    assert export_best.main(["--study", "f", "--group", "team", "--storage", url, "--out",
                             str(tmp_path / "exports"), "--cache-dir",
                             str(tmp_path / "cache"), "--no-pt2"]) == 0
    card = (tmp_path / "exports" / "team.md").read_text()
    assert "**It cannot grade physical defects**" in card


@pytest.mark.parametrize("name", ["", "   ", " team", "a/b"])
def test_an_empty_or_unusable_study_name_is_refused(name, delivery, tmp_path, capsys):
    assert run_study.main(args(delivery, tmp_path, study=name)) == 2
    assert "--study" in capsys.readouterr().err
    assert not (tmp_path / "studies.db").exists()


def test_confirm_zero_is_said_to_mean_no_confirmation(capsys):
    with pytest.raises(SystemExit):
        export_best.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "0 (the default): no confirmation" in help_text


def test_the_wrapper_really_breaks_training():
    """The --workers test's children fail only because the wrapper replaces training."""
    assert "objective.train = broken" in WRAPPER and sys.executable
