"""Helpers shared by the benchmark scripts: synthetic data, timing, machine, output lines."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RATIO_PREFIX = "RATIO"


def add_common_args(p: argparse.ArgumentParser, *, n: int, size: int = 310) -> None:
    """``--data`` (reuse a delivery), ``--n``/``--source-size`` (else make one), ``--threads``."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="an existing delivery (folder with arrays/ and the label CSVs); "
                   "default: a synthetic one made in a temporary folder")
    g.add_argument("--n", type=int, default=n, help="erasers in the synthetic set")
    g.add_argument("--source-size", type=int, default=size,
                   help="side of the synthetic captures (the delivered size is 310)")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic set and runs")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, all cores)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, measure nothing")


@contextmanager
def workdir(keep: str | None = None) -> Iterator[Path]:
    """A scratch folder removed afterwards (or ``keep`` when given, left in place)."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="eraser-bench-") as tmp:
        yield Path(tmp)


def synthetic(args: argparse.Namespace, folder: Path, *, defect_rate: float = 0.35,
              subtle_rate: float | None = None) -> Path:
    """``args.data`` if given, else a synthetic delivery of ``args.n`` erasers in ``folder``."""
    if args.data:
        return Path(args.data)
    from data.synth import generate

    out = folder / "delivery"
    if (out / "labels_multiclass.csv").exists():
        return out
    generate(out, n=args.n, seed=args.seed, size=args.source_size, defect_rate=defect_rate,
             subtle_rate=subtle_rate, workers=min(16, os.cpu_count() or 1), force=True)
    return out


def machine() -> str:
    """A generic description of this machine (no host names or paths)."""
    import torch

    cores = os.cpu_count() or 1
    parts = [f"{cores} CPU cores ({platform.machine()})", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    try:
        load = os.getloadavg()[0]
        parts.append(f"load average {load:.1f} at start")
    except OSError:
        pass
    return ", ".join(parts)


def begin(args: argparse.Namespace, plan: str) -> int | None:
    """The common start of a benchmark: check ``--data``, apply ``--threads``, print the
    machine and ``plan``. Returns the exit code when the run ends here (2: bad ``--data``;
    0: ``--dry-run``), else None."""
    from cli.common import fail

    if args.data and not Path(args.data).is_dir():
        return fail(f"--data {args.data} is not a folder; give a delivery folder with arrays/ "
                    "and the label CSVs, or leave --data out for a synthetic set.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"machine  {machine()}")
    print(f"plan     {args.data or f'{args.n} synthetic erasers at {args.source_size} px'}"
          f"{plan}")
    if args.dry_run:
        print("dry run: nothing measured.")
        return 0
    return None


def ratio_line(label: str, value: float, note: str = "") -> str:
    """One machine-readable figure: ``RATIO <label>: <value>x  <note>``."""
    text = f"{RATIO_PREFIX} {label}: {value:.2f}x"
    return f"{text}  {note}" if note else text


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table (pastes straight into RESULTS.md)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
