"""Train one configuration without a search, the way every trial is trained.

Give the run as a JSON file (print a template with --print-config) with the sections
"model" (architecture), "train" (optimiser, loss, epochs...) and "augment". Writes the
best-epoch checkpoint (<name>.pth, the export format), its training curves and history.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.checks import (
    EPOCHS,
    SEED,
    VAL_FRACTION,
    bad_number,
    existing_outputs,
    file_name_problem,
    folder_problem,
)
from cli.common import HelpFormatter, fail, progress_bar, setup_logging
from data import DataError, SplitError, format_problems, k_for_fraction, load_data, make_split
from data.cache import default_cache_dir
from data.kinds import assess
from data.pipeline import TrainData
from model import describe, save_checkpoint
from model.config import BackboneConfig
from model.fileio import write_text
from model.pretrained import WEIGHTS_ENV, WeightFinder, WeightsError
from reporting.plots import training_curves
from training.config import RunConfig, RunFileError, TrainConfig, load_config, save_config
from training.device import DeviceError, describe_device, resolve_device
from training.loop import EpochReport, NonFiniteLossError, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", help="folder of .npy/PNG files, arrays.zip or images.zip")
    p.add_argument("--labels", nargs="+", metavar="CSV", help="label CSV(s); default: the "
                   "CSVs next to the images")
    p.add_argument("--config", help="run configuration (JSON); default: the built-in defaults")
    p.add_argument("--print-config", action="store_true",
                   help="print the default configuration as JSON and exit")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation share")
    p.add_argument("--group-regex", default=None, help="keep packs on one side of the split")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--weights", metavar="PATH", help="ImageNet weights for a pretrained backbone "
                   "config: a file named after it, or a folder of them (default: "
                   f"${WEIGHTS_ENV}, then timm's download cache)")
    p.add_argument("--out", default="reports/train", help="folder for the outputs")
    p.add_argument("--name", default="model", help="file stem of the checkpoint")
    p.add_argument("--force", action="store_true",
                   help="replace the results of an earlier run in --out")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="decoded-image cache")
    p.add_argument("--dry-run", action="store_true", help="check data and config, train nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def outputs(out: Path, name: str) -> list[Path]:
    return [out / f"{name}.pth", out / "history.json", out / "config.json", out / "curves.png"]


def check_flags(args: argparse.Namespace) -> str | None:
    """Flags in range and every output writable (and not an earlier run's, without --force)
    before the data are loaded: a run must never fail after training for want of a folder."""
    out = Path(args.out)
    return (bad_number([("--epochs", args.epochs, EPOCHS), ("--seed", args.seed, SEED),
                        ("--val-fraction", args.val_fraction, VAL_FRACTION)])
            or file_name_problem(args.name, "--name") or folder_problem(out, "--out")
            or folder_problem(args.cache_dir, "--cache-dir")
            or (None if args.force else existing_outputs(outputs(out, args.name), "--out")))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.print_config:
        print(json.dumps(RunConfig().to_dict(), indent=2))
        return 0
    if not args.data:
        return fail("--data is required (the folder or zip of the erasers).")
    problem = check_flags(args)
    if problem:
        return fail(problem)
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    try:
        config = (load_config(args.config, **epochs) if args.config
                  else RunConfig(train=TrainConfig(**epochs)))
        device = resolve_device(args.device)
        weights = WeightFinder(args.weights)
        if isinstance(config.model, BackboneConfig):  # before any work: weights are here
            weights.verified(config.model.backbone)
    except RunFileError as exc:
        return fail(f"--config: {exc}")
    except (DeviceError, WeightsError) as exc:
        return fail(str(exc))
    update, close = progress_bar("loading data")
    try:
        data = load_data(args.data, args.labels, cache_dir=args.cache_dir, progress=update)
        split = make_split(data.ids, data.codes, k=k_for_fraction(args.val_fraction),
                           seed=args.seed, group_regex=args.group_regex)
    except DataError as exc:
        close()
        return fail(f"{args.data} cannot be used:\n{format_problems(exc.problems)}")
    except SplitError as exc:
        close()
        return fail(str(exc))
    close()
    teach = assess(data.targets_of(split.train_ids()), data.label_kind)
    if not teach.ok:
        return fail(" ".join(teach.errors) + " Nothing was trained.")
    print(f"model   {describe(config.model)}")
    print(f"data    {len(split.train_ids())} train / {len(split.val_ids())} validation, "
          f"device {describe_device(device)}")
    for warning in teach.warnings():
        print(f"WARNING {warning}")
    if args.dry_run:
        print("dry run: nothing trained.")
        return 0

    def on_epoch(r: EpochReport) -> None:
        print(f"epoch {r.epoch:3d}/{r.epochs}  loss {r.train_loss:.4f}  val loss "
              f"{r.val_loss:.4f}  {config.train.metric} {r.score:.4f}  best {r.best_score:.4f} "
              f"(epoch {r.best_epoch})  {r.seconds:.1f} s", flush=True)

    td = TrainData.from_split(data, split, config.model.input_size, device=device)
    try:
        result = train(config, td, device=device, callback=on_epoch, weights=weights)
    except NonFiniteLossError as exc:
        return fail(f"training stopped: {exc}")
    out = Path(args.out)
    ckpt = result.checkpoint(data_hash=data.data_hash, split_hash=split.hash,
                             source_size=data.image_size)
    pth = save_checkpoint(ckpt, out / f"{args.name}.pth")
    history = write_text(out / "history.json", json.dumps(result.history, indent=1))
    run_file = save_config(config, out / "config.json")  # the run as trained: --config reads it
    curves = training_curves(result.history, out / "curves.png", config.train.metric)
    print(f"\n{result.stop_reason}; best epoch {result.best_epoch}: {config.train.metric} "
          f"{result.score:.4f}")
    print(f"wrote   {pth}, {curves}, {history}, {run_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
