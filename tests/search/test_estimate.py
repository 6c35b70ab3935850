"""The study-time estimate: which configuration is timed, how it is scaled, and that the
real timer runs the training loop on random images."""

import math

import pytest
import torch

from model import complexity
from search.estimate import (
    StudyEstimate,
    describe_estimate,
    duration,
    estimate_study,
    sample_configs,
    time_epoch,
)
from search.space import SearchSpace

SPACE = SearchSpace(sizes=(32, 48), depth=(2, 3), base_widths=(8, 16), batch_sizes=(16,),
                    epochs=10, patience=0)


def test_the_median_configuration_is_timed_and_scaled_to_the_split():
    timed = []

    def timer(config, n, device):
        timed.append((config, n, device))
        return 2.0

    est = estimate_study(SPACE, n_train=320, n_val=80, device="cpu", trials=5, timer=timer)
    (config, n, device), = timed
    assert n == 2 * config.train.batch_size and device == torch.device("cpu")
    work = sorted(complexity(c.model)["macs"] for c in sample_configs(SPACE))
    assert complexity(config.model)["macs"] == work[len(work) // 2]
    # 2 s for 32 training + 16 validation images; the split has 320 + 80
    assert est.epoch_seconds == pytest.approx(2.0 * (320 + 80 / 3) / (32 + 32 / 6))
    assert est.trial_seconds == pytest.approx(10 * est.epoch_seconds)
    mean_work = sum(work) / len(work)
    assert est.study_seconds == pytest.approx(
        5 * 10 * est.epoch_seconds * mean_work / work[len(work) // 2])
    assert est.input_size == config.model.input_size


def test_the_real_timer_trains_an_epoch_on_random_images():
    config = sample_configs(SPACE, n=1)[0]
    seconds = time_epoch(config, 2 * config.train.batch_size, torch.device("cpu"))
    assert math.isfinite(seconds) and seconds > 0


@pytest.mark.parametrize(("seconds", "text"), [
    (0.42, "0.4 s"), (42, "42 s"), (600, "10 min"), (3 * 3600, "3.0 h"),
    (5 * 86400, "5.0 days")])
def test_durations_read_naturally(seconds, text):
    assert duration(seconds) == text


def test_the_estimate_in_words_names_the_bound_and_the_trials():
    est = StudyEstimate(architecture="2x[1 conv 3-3] 8-16", input_size=32, epoch_seconds=30,
                        mean_epoch_seconds=40, max_epochs=30, trials=50)
    first, second = describe_estimate(est)
    assert "30 s per epoch" in first and "15 min for all 30 epochs" in first
    assert "50 trial(s) x up to 30 epochs: at most about 16.7 h" in second


def test_a_configuration_that_cannot_train_leaves_the_study_to_go_on(synthetic, tmp_path,
                                                                       capsys, monkeypatch):
    import run_study
    import search.estimate

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(search.estimate, "time_epoch", out_of_memory)
    assert run_study.main(["--data", str(synthetic), "--study", "s", "--storage",
                           f"sqlite:///{tmp_path / 'studies.db'}", "--sizes", "32",
                           "--cache-dir", str(tmp_path / "cache"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "could not be timed: the configuration could not train here" in out
    assert "nothing trained" in out
