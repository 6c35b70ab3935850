"""Pick the training device and say which one it is."""

from __future__ import annotations

import os

import torch


class DeviceError(ValueError):
    """The requested device does not exist here (message is user-facing)."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; others are checked to exist."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N "
                          "or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asks for a GPU but PyTorch sees no CUDA GPU "
                              "here; use --device auto or cpu.")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) "
                              "are visible.")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise DeviceError("--device mps: Apple's MPS backend is not available here.")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 autocast)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads; no GPU found or chosen)"
    return str(device)


def worker_device(requested: str, worker_index: int) -> torch.device:
    """The device of worker ``worker_index`` for ``--device requested``.

    ``auto`` and ``cuda`` spread the workers of one machine round-robin over its visible
    GPUs; an explicit ``cuda:N`` puts every worker on GPU N (the user chose it, e.g. to leave
    the other GPUs to someone else).
    """
    base = resolve_device(requested)
    if base.type != "cuda" or ":" in requested:
        return base
    return torch.device("cuda", worker_index % torch.cuda.device_count())


def threads_per_worker(workers: int) -> int:
    """Divide the CPU cores between workers so they don't oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
