"""Run ``notebooks/quickstart.ipynb`` top to bottom on a fresh clone, several times.

The suite's notebook test runs a tiny configuration once; which trial wins (and so which
network the export and its ONNX check meet) changes with the seed. This runs the notebook as
a user does (its own defaults: 400 synthetic erasers of 310 px, a 4-minute search, ONNX
export, predictions on held-out erasers) with several seeds, each in a fresh clone of the
committed code, and prints one line per run: whether every cell ran, the best trial, the
export's ONNX check and the held-out scores.

    python -m bench.notebook_runs --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from bench._common import machine

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed")
    p.add_argument("--budget", default=None, help="override the notebook's BUDGET (e.g. 2m)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds a cell may take")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p.parse_args(argv)


def fresh_clone(tmp: Path) -> Path:
    """A clone of the committed code (what a user gets), not this working tree."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    return clone


def run_once(clone: Path, seed: int, budget: str | None, timeout: int) -> dict:
    nb = nbformat.read(clone / "notebooks" / "quickstart.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    work = clone / f"run_seed{seed}"
    params = {"SEED": seed, "WORK_DIR": f"__import__('pathlib').Path({str(work)!r})"}
    if budget:
        params["BUDGET"] = repr(budget)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{k} = {v}" for k, v in params.items())))
    env_before = dict(os.environ)
    os.environ["PYTHONPATH"] = str(clone)
    os.environ["ERASER_CACHE_DIR"] = str(clone / ".cache")
    started = time.monotonic()
    error = ""
    try:
        NotebookClient(nb, kernel_name="python3", timeout=timeout,
                       resources={"metadata": {"path": str(clone / "notebooks")}}).execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:200]
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs)
    best = re.search(r"Best trials of .*?\n.*?\n\s*(\d+)\s+([\d.]+).*?  (\S.*)", text)
    onnx = re.findall(r"max \|onnxruntime - PyTorch\| ([\d.e+-]+)", text)
    heldout = re.search(r"mean \(graded\)\s+([\d.]+)", text)  # predict.py on held-out erasers
    return {"seed": seed, "ok": not error, "error": error,
            "minutes": (time.monotonic() - started) / 60,
            "best": f"trial {best.group(1)} {best.group(2)} {best.group(3)[:60]}" if best else "-",
            "onnx": "/".join(onnx) or "-", "heldout": heldout.group(1) if heldout else "-"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine {machine()}")
    print(f"plan    the notebook top to bottom on a fresh clone, seeds {args.seeds}, "
          f"budget {args.budget or 'the notebook default'}")
    if args.dry_run:
        print("dry run: nothing run.")
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="eraser-notebook-") as tmp:
        clone = fresh_clone(Path(tmp))
        for seed in args.seeds:
            r = run_once(clone, seed, args.budget, args.timeout)
            failed += not r["ok"]
            print(f"seed {r['seed']}: {'ran top to bottom' if r['ok'] else 'FAILED'} in "
                  f"{r['minutes']:.1f} min; best {r['best']}; ONNX max diff {r['onnx']}; "
                  f"held-out graded AUC-PR {r['heldout']}"
                  + (f"; error: {r['error']}" if r['error'] else ""), flush=True)
    print(f"RESULT  {len(args.seeds) - failed} of {len(args.seeds)} runs top to bottom")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
