"""Device choice for --device and --workers (the GPU count is faked: the mapping is pure)."""

from __future__ import annotations

import pytest
import torch

from training import device as dev
from training.device import DeviceError, resolve_device, threads_per_worker, worker_device


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.parametrize("requested", ["cuda", "auto"])
def test_workers_spread_round_robin_over_the_gpus(four_gpus, requested):
    assert [worker_device(requested, i).index for i in range(6)] == [0, 1, 2, 3, 0, 1]


def test_an_explicit_gpu_takes_every_worker(four_gpus):
    assert {worker_device("cuda:2", i) for i in range(5)} == {torch.device("cuda", 2)}


def test_cpu_workers_stay_on_the_cpu():
    assert worker_device("cpu", 3) == torch.device("cpu")


def test_a_gpu_that_is_not_there_is_a_clear_error(four_gpus, monkeypatch):
    with pytest.raises(DeviceError, match="only 4 CUDA GPU"):
        resolve_device("cuda:7")
    with pytest.raises(DeviceError, match="is not a device"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="sees no CUDA GPU"):
        resolve_device("cuda")


def test_threads_are_divided_between_workers(monkeypatch):
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 16)
    assert [threads_per_worker(k) for k in (1, 2, 4, 32)] == [16, 8, 4, 1]
