"""Smoke tests of the benchmarks (bench/): each runs with tiny settings and prints its ratio
lines. No timing is asserted. (The faster augmentation the benchmarks led to, and that it
keeps kornia's distributions: tests/data/test_augment.py.)"""

import math
import re

import pytest

from bench import (
    data_path,
    ensemble,
    gpu_workers,
    memory,
    notebook_runs,
    pruning,
    suite,
    trial_overhead,
)

RATIO = re.compile(r"^RATIO (.+): (\S+)x", re.M)


def ratios(out: str) -> dict[str, float]:
    found = {label: float(value) for label, value in RATIO.findall(out)}
    assert found, f"no RATIO line in:\n{out}"
    assert all(math.isfinite(v) and v > 0 for v in found.values()), found
    return found


@pytest.mark.parametrize(("module", "required"), [
    (data_path, []), (trial_overhead, []), (pruning, []), (memory, []), (gpu_workers, []),
    (notebook_runs, []), (suite, ["--work", "unused"]), (ensemble, ["--work", "unused"])])
def test_every_script_has_help_and_a_dry_run(module, required, capsys):
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and "--dry-run" in capsys.readouterr().out
    assert module.main(["--dry-run", *required]) == 0
    assert "dry run" in capsys.readouterr().out


def test_bad_settings_fail_with_a_message(capsys):
    assert data_path.main(["--batch-size", "1"]) == 2
    assert pruning.main(["--data", "/nonexistent/delivery"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_data_path_prints_its_ratios(synthetic, capsys):
    assert data_path.main(["--data", str(synthetic), "--size", "32", "--batch-size", "16",
                           "--epochs", "1", "--steps", "1", "--loader-workers", "0"]) == 0
    found = ratios(capsys.readouterr().out)
    assert "data path ours / per-sample DataLoader(0 workers)" in found
    assert any(k.startswith("augmentation data.augment / plain kornia") for k in found)
    share = [v for k, v in found.items() if k.startswith("preprocessing+augmentation")]
    assert len(share) == 2 and all(v < 1 for v in share)


def test_trial_overhead_times_the_boundaries(synthetic, capsys):
    assert trial_overhead.main(["--data", str(synthetic), "--size", "16", "--trials", "2",
                                "--starts", "0"]) == 0
    out = capsys.readouterr().out
    assert "trial overhead / one training epoch" in ratios(out)
    assert "Optuna: tell, sampler, ask" in out


@pytest.mark.slow
def test_pruning_compares_pruners(synthetic, capsys):
    assert pruning.main(["--data", str(synthetic), "--size", "16", "--trials", "2",
                         "--epochs", "2", "--pruners", "none", "median"]) == 0
    out = capsys.readouterr().out
    found = ratios(out)
    assert {"epochs none / median", "wall time none / median"} <= set(found)
    assert "| none " in out and "| median " in out


def test_peak_rss_of_a_child():
    # read inside the child: this big test process (torch loaded) must not count
    small = memory.peak_rss(["-c", "pass"], {}, ".")
    big = memory.peak_rss(["-c", "b = bytearray(64 * 2**20); b[::4096] = "
                           "b'x' * len(b[::4096])"], {}, ".")
    assert small < 200 * 2**20 and big - small > 48 * 2**20
    with pytest.raises(RuntimeError, match="exited with 3"):
        memory.peak_rss(["-c", "raise SystemExit(3)"], {}, ".")


def test_gpu_results_table_and_smi_parsing(tmp_path):
    when, util, mem = gpu_workers.parse_smi_line("2026/11/28 15:30:00.123, 87, 1234\n")
    assert (when.second, util, mem) == (0, 87.0, 1234.0)
    assert gpu_workers.parse_smi_line("[N/A], [N/A], 5") is None
    results = [{"k": k, "trials": 3 * k, "epochs": 9 * k, "per_trial": 900 / k ** 0.5,
                "aggregate": 900 * k ** 0.5, "util": 40.0 * k, "mem": 2000.0, "wall": 90.0}
               for k in (1, 4)]
    text = gpu_workers.report(results, None, "settings: tiny")
    assert ratios(text) == {"images/s, 4 workers / 1": pytest.approx(2.0)}
    gpu_workers.write_results(str(tmp_path / "out"), text)
    written = (tmp_path / "out" / "gpu_results.md").read_text()
    assert "| 4 " in written and not list((tmp_path / "out").glob("*.tmp"))


def test_gpu_bench_splits_a_trials_time_from_its_history(synthetic, tmp_path):
    import optuna

    from reporting.trial_report import dashboard_hook
    from search.session import make_objective, prepare, run
    from search.space import SearchSpace

    space = SearchSpace(sizes=(32,), depth=(2, 2), base_widths=(8,), batch_sizes=(16,),
                        epochs=2, patience=0)
    session = prepare(synthetic, study_name="t", storage_url=f"sqlite:///{tmp_path / 's.db'}",
                      space=space, sampler="random", pruner="none",
                      artifact_dir=tmp_path / "artifacts", cache_dir=tmp_path / "cache")
    hook = dashboard_hook(session, figures=False)
    run(session, make_objective(session, "cpu", on_result=[hook]), n_trials=2)
    trials = session.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    timing = gpu_workers.trial_timing(trials, session.study._storage, tmp_path / "artifacts")
    assert timing["n"] == 2 and timing["epochs"] == 2
    assert min(timing["setup"], timing["outside"]) >= 0
    assert min(timing["first"], timing["later"]) > 0
    # two epochs each, medians of two trials are means: the parts add up to the wall time
    parts = ("setup", "first", "later", "outside")
    assert sum(timing[k] for k in parts) == pytest.approx(timing["wall"], abs=0.05)
    assert gpu_workers.trial_timing(trials, session.study._storage, tmp_path / "none") == {}
    text = gpu_workers.report([{"k": 1, "trials": 2, "epochs": 4, "per_trial": 1.0,
                                "aggregate": 1.0, "util": float("nan"), "mem": float("nan"),
                                "wall": 5.0, "timing": {"first": timing, "later": {}}}],
                              None, "settings")
    assert "Where a completed trial's time goes" in text and "| outside training |" in text
    assert "| each worker's first |" in text and "| later |" not in text
