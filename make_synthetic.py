"""``python make_synthetic.py OUT_DIR [--n N] [--seed S] [--preset P] ...``: write a synthetic
MILAN eraser data set in the delivered format (``data.synth``), e.g. to try the product without
a delivery, or to test it on a product line that looks otherwise (``--preset``).
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.checks import at_least, bad_number
from cli.common import EXIT_USAGE, HelpFormatter, fail, setup_logging
from data.synth import PRESETS, TRUTH_CSV, generate
from model.channels import NATIVE_SIZE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write a synthetic MILAN eraser data set in the delivered format "
        "(arrays/<ID>.npy, labels_binary.csv, labels_multiclass.csv, truth/clean_labels.csv).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must be empty)")
    p.add_argument("--n", type=int, default=200, help="number of erasers")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=NATIVE_SIZE, help="side length in pixels")
    p.add_argument("--defect-rate", type=float, default=0.35, help="fraction defective")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="fraction of defective erasers labelled good (missed defects)",
    )
    p.add_argument(
        "--fp-noise", type=float, default=0.0, help="fraction of good erasers labelled defective"
    )
    p.add_argument("--subtle-rate", type=float, default=None,
                   help="share of defects drawn subtle rather than obvious (default: the "
                   "preset's, half)")
    p.add_argument("--preset", choices=list(PRESETS), default="default",
                   help="the product line's look: logo angle and layout, text, size and place, "
                   "colours, ink, belt and light, defect sizes (data/synth/style.py)")
    p.add_argument("--png", action="store_true", help="also write images/<ID>_<CH>.png")
    p.add_argument("--zip", action="store_true", help="also write arrays.zip and images.zip")
    p.add_argument(
        "--id-format",
        default="E{i:05d}",
        help="ID pattern with fields {i}, {pack}, {k}, e.g. P{pack:04d}_E{k:02d}",
    )
    p.add_argument("--pack-size", type=int, default=8, help="erasers per {pack}")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (CPUs here)"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite the generated files in a non-empty OUT_DIR"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad arguments or OUT_DIR)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message (or the help)
        return int(exc.code or 0)
    setup_logging()
    problem = bad_number([("--seed", args.seed, at_least(0))])  # the rest: data.synth checks
    if problem:
        return fail(problem)

    show = sys.stderr.isatty()
    step = max(1, args.n // 20)

    def progress(done: int) -> None:
        if show and (done % step == 0 or done == args.n):
            print(f"\r{done}/{args.n} erasers", end="", file=sys.stderr, flush=True)

    try:
        s = generate(
            args.out_dir,
            args.n,
            args.seed,
            size=args.size,
            defect_rate=args.defect_rate,
            noise=args.noise,
            fp_noise=args.fp_noise,
            png=args.png,
            zip_arrays=args.zip,
            zip_images=args.zip,
            id_format=args.id_format,
            pack_size=args.pack_size,
            workers=args.workers,
            progress=progress,
            force=args.force,
            subtle_rate=args.subtle_rate,
            style=PRESETS[args.preset],
        )
    except (ValueError, OSError) as exc:  # bad arguments, OUT_DIR not empty or not writable
        print(f"make_synthetic.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if show:
            print(file=sys.stderr)
    print(
        f"{s.n} erasers ({args.size} px, seed {args.seed}, preset {args.preset}) in "
        f"{s.seconds:.1f} s -> {s.out_dir}\n"
        f"  true classes: 0_0 {s.n_good}, 1_0 {s.n_print}, 0_1 {s.n_physical}, 1_1 {s.n_both}\n"
        f"  labels flipped by noise: {s.n_flipped} (truth in {s.out_dir / TRUTH_CSV})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
