"""Writing a synthetic delivery: the label plan (exact class counts, injected noise), the
IDs, rendering in worker processes, and the files in the order that keeps an interrupted run
from looking complete (labels last)."""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import multiprocessing
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from model.channels import CHANNELS, NATIVE_SIZE
from model.fileio import atomic_write

from .render import DEFAULT_STYLE, EraserInfo, render_eraser
from .scene import style_severity
from .style import Style

logger = logging.getLogger(__name__)

_PLAN_STREAM = 0x5EED1AB  # extra seed word: the label plan never shares a stream with erasers
_POOL_MIN = 16  # below this many erasers a process pool costs more than it saves


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty (and ``force`` was not given)."""


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote. Class counts are of the true (clean) labels."""

    out_dir: Path
    n: int
    n_print: int
    n_physical: int
    n_both: int
    n_good: int
    n_flipped: int  # labels changed by injected noise
    seconds: float


def make_ids(n: int, id_format: str = "E{i:05d}", pack_size: int = 8) -> list[str]:
    """IDs from ``id_format`` with fields ``i``, ``pack`` (= i // pack_size), ``k``.

    Raises ``ValueError`` for a bad format, duplicate IDs or IDs unsafe as file names.
    """
    try:
        ids = [id_format.format(i=i, pack=i // pack_size, k=i % pack_size) for i in range(n)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad --id-format {id_format!r} ({exc}); use the fields {{i}}, {{pack}}, {{k}}, "
            'e.g. "E{i:05d}" or "P{pack:04d}_E{k:02d}"'
        ) from None
    bad = [s for s in ids if not s or s.startswith(".") or any(c in s for c in '/\\,"\n\r\t')]
    if bad:
        raise ValueError(f"--id-format {id_format!r} gives unusable ID {bad[0]!r}")
    if len(set(ids)) != n:
        raise ValueError(
            f"--id-format {id_format!r} gives duplicate IDs; include {{i}} or {{pack}} and {{k}}"
        )
    return ids


def plan_labels(
    n: int, seed: int, defect_rate: float = 0.35, noise: float = 0.0, fp_noise: float = 0.0
) -> tuple[list[str], list[str]]:
    """Clean and noisy ``X_Y`` labels for ``n`` erasers.

    Exact class counts (45 % print-only, 45 % physical-only, 10 % both among the defective),
    shuffled deterministically. ``round(noise * n_defective)`` defective erasers are labelled
    ``0_0`` and ``round(fp_noise * n_good)`` good ones ``1_0`` or ``0_1``.
    """
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_def = round(defect_rate * n)
    n_both = round(0.10 * n_def)
    if n_def >= 3:  # small sets still get every class
        n_both = max(1, n_both)
    n_print = (n_def - n_both + 1) // 2
    n_phys = n_def - n_both - n_print
    counts = {"1_0": n_print, "0_1": n_phys, "1_1": n_both, "0_0": n - n_def}
    clean = np.repeat(list(counts), list(counts.values()))[rng.permutation(n)]
    noisy = clean.copy()
    defective = np.flatnonzero(clean != "0_0")
    good = np.flatnonzero(clean == "0_0")
    missed = rng.choice(defective, round(noise * len(defective)), replace=False)
    false_pos = rng.choice(good, round(fp_noise * len(good)), replace=False)
    noisy[missed] = "0_0"
    noisy[false_pos] = rng.choice(["1_0", "0_1"], len(false_pos))
    return clean.tolist(), noisy.tolist()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _png_bytes(plane: np.ndarray) -> bytes:
    # level 1: noisy captures hardly compress better at higher levels, which cost 1.5-3x
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(plane)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass(frozen=True)
class _Job:
    seed: int
    size: int
    out_dir: str
    png: bool  # write images/<ID>_<CH>.png
    png_bytes: bool  # return the PNG bytes (for images.zip)
    style: Style = DEFAULT_STYLE
    pack_size: int = 8


def _work(job: _Job, task: tuple[int, str, str]) -> tuple[EraserInfo, list[bytes] | None]:
    """Render one eraser and write its files (runs in a worker process)."""
    index, eid, label = task
    arr, info = render_eraser(job.seed, index, label, job.size,
                              severity=style_severity(job.seed, index, job.style),
                              style=job.style, pack_size=job.pack_size)
    data = _npy_bytes(arr)
    with open(os.path.join(job.out_dir, "arrays", f"{eid}.npy"), "wb") as fh:
        fh.write(data)
    pngs = None
    if job.png or job.png_bytes:
        pngs = [_png_bytes(arr[..., c]) for c in range(len(CHANNELS))]
        if job.png:
            for ch, blob in zip(CHANNELS, pngs, strict=True):
                with open(os.path.join(job.out_dir, "images", f"{eid}_{ch}.png"), "wb") as fh:
                    fh.write(blob)
    return info, (pngs if job.png_bytes else None)


def _start_method() -> str:
    """``fork`` where available: a spawned worker re-imports the ``data`` package (and with it
    torch and kornia, seconds per worker), while the workers only need numpy, scipy and PIL,
    which are safe in a forked child even when the parent has started threads."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _run_jobs(
    job: _Job, tasks: list[tuple[int, str, str]], workers: int
) -> Iterator[tuple[EraserInfo, list[bytes] | None]]:
    """Results in task order, from a process pool when that pays off."""
    fn = functools.partial(_work, job)
    if workers <= 1 or len(tasks) < _POOL_MIN:
        yield from map(fn, tasks)
        return
    ctx = multiprocessing.get_context(_start_method())
    chunk = max(1, len(tasks) // (workers * 32))  # small chunks: no straggler at the end
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=chunk)


# Everything generate() may have written; --force removes exactly these before regenerating.
_CSV_NAMES = ("labels_binary.csv", "labels_multiclass.csv")
TRUTH_CSV = Path("truth") / "clean_labels.csv"
STYLE_JSON = Path("truth") / "style.json"  # the look the delivery was made with


def _remove_previous(out: Path) -> None:
    # CSVs first: from here on the folder no longer looks like a complete data set
    for name in (*_CSV_NAMES, str(TRUTH_CSV), str(STYLE_JSON), "arrays.zip", "images.zip"):
        (out / name).unlink(missing_ok=True)
        (out / f"{name}.tmp").unlink(missing_ok=True)
    for folder, pattern in (("arrays", "*.npy"), ("images", "*.png")):
        if (out / folder).is_dir():
            for f in (out / folder).glob(pattern):
                f.unlink()


def _zip_add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a member with a fixed timestamp, so a seed gives byte-identical zips too."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zf.compression
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=zf.compresslevel)


def _write_csv(path: Path, header: list[str], rows: list[list[str | int]]) -> None:
    """Write via a temporary file so a reader never sees half a CSV."""
    with atomic_write(path, newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _check_args(n: int, size: int, rates: dict[str, float], pack_size: int, workers: int | None):
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if not 16 <= size <= 4096:
        raise ValueError(f"--size must be between 16 and 4096 pixels, got {size}")
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name} must be between 0 and 1, got {value}")
    if pack_size < 1:
        raise ValueError(f"--pack-size must be at least 1, got {pack_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


# Long (about 120 lines) because it is the one place that checks the arguments, plans the
# labels, renders in parallel and writes the files in the order that keeps an interrupted run
# from looking complete (labels last); each step is a call to a helper above.
def generate(
    out_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    *,
    size: int = NATIVE_SIZE,
    defect_rate: float = 0.35,
    noise: float = 0.0,
    fp_noise: float = 0.0,
    png: bool = False,
    zip_arrays: bool = False,
    zip_images: bool = False,
    id_format: str = "E{i:05d}",
    pack_size: int = 8,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
    subtle_rate: float | None = None,
    style: Style = DEFAULT_STYLE,
) -> SynthSummary:
    """Write a synthetic data set of ``n`` erasers into ``out_dir`` (see the module docstring).

    Raises ``ValueError`` for bad arguments and :class:`OutputExistsError` if ``out_dir`` is
    not empty and ``force`` is false; nothing is written in either case. ``style`` is the
    product line's look (:mod:`data.synth.style`; its ``PRESETS``); ``subtle_rate`` sets the
    share of subtle defects (default: the style's, about half). ``progress`` is
    called with the number of erasers done so far. The label CSVs are written last, so an
    interrupted run never looks like a complete data set.
    """
    t0 = time.perf_counter()
    _check_args(
        n,
        size,
        {"defect-rate": defect_rate, "noise": noise, "fp-noise": fp_noise,
         "subtle-rate": 0.5 if subtle_rate is None else subtle_rate},
        pack_size,
        workers,
    )
    ids = make_ids(n, id_format, pack_size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another OUT_DIR")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{out} exists and is not empty; choose a new folder, or pass --force to "
                "overwrite the generated files in it"
            )
        logger.info("overwriting the generated files in %s", out)
        _remove_previous(out)

    clean, noisy = plan_labels(n, seed, defect_rate, noise, fp_noise)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    if png:
        (out / "images").mkdir(exist_ok=True)
    workers = workers or os.cpu_count() or 1
    if subtle_rate is not None:
        style = replace(style, subtle_rate=subtle_rate)
    job = _Job(seed, size, str(out), png, zip_images, style, pack_size)
    tasks = list(zip(range(n), ids, clean, strict=True))
    logger.info("rendering %d erasers of %d px into %s (%d workers)", n, size, out, workers)

    # Zips are built next to their final name and renamed when complete.
    zips: dict[str, zipfile.ZipFile] = {}
    if zip_arrays:  # .npy of noisy images barely compresses; level 1 keeps it quick
        zips["arrays"] = zipfile.ZipFile(
            out / "arrays.zip.tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=1
        )
    if zip_images:  # PNGs are already compressed
        zips["images"] = zipfile.ZipFile(out / "images.zip.tmp", "w", zipfile.ZIP_STORED)
    infos: list[EraserInfo] = []
    try:
        for done, (info, pngs) in enumerate(_run_jobs(job, tasks, workers), start=1):
            eid = ids[done - 1]
            infos.append(info)
            if "arrays" in zips:
                data = (out / "arrays" / f"{eid}.npy").read_bytes()
                _zip_add(zips["arrays"], f"arrays/{eid}.npy", data)
            if pngs is not None:
                for ch, blob in zip(CHANNELS, pngs, strict=True):
                    _zip_add(zips["images"], f"images/{eid}_{ch}.png", blob)
            if progress is not None:
                progress(done)
    except BaseException:
        # An interrupted run leaves the arrays written so far but no zip and no CSV, so it
        # cannot be mistaken for a complete data set.
        for name, zf in zips.items():
            zf.close()
            (out / f"{name}.zip.tmp").unlink(missing_ok=True)
        raise
    for zf in zips.values():
        zf.close()
    for name in zips:
        os.replace(out / f"{name}.zip.tmp", out / f"{name}.zip")

    flipped = [int(c != y) for c, y in zip(clean, noisy, strict=True)]
    (out / "truth").mkdir(exist_ok=True)
    with atomic_write(out / STYLE_JSON) as fh:
        json.dump(style.to_dict(), fh, indent=1)
    _write_csv(
        out / TRUTH_CSV,
        ["ID", "label", "print_kind", "physical_kind", "severity", "flipped"],
        [
            [eid, info.label, info.print_kind, info.physical_kind, info.severity, f]
            for eid, info, f in zip(ids, infos, flipped, strict=True)
        ],
    )
    _write_csv(
        out / "labels_multiclass.csv",
        ["ID", "label"],
        [[eid, y] for eid, y in zip(ids, noisy, strict=True)],
    )
    _write_csv(
        out / "labels_binary.csv",
        ["ID", "error"],
        [[eid, int(y != "0_0")] for eid, y in zip(ids, noisy, strict=True)],
    )

    summary = SynthSummary(
        out_dir=out,
        n=n,
        n_print=clean.count("1_0"),
        n_physical=clean.count("0_1"),
        n_both=clean.count("1_1"),
        n_good=clean.count("0_0"),
        n_flipped=sum(flipped),
        seconds=time.perf_counter() - t0,
    )
    logger.info("wrote %d erasers to %s in %.1f s", n, out, summary.seconds)
    return summary
