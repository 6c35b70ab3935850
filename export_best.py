"""Export the best trial of a study (or --trial N) as <group>.pth, ready to hand in.

The weights come from the trial's stored best epoch (nothing is retrained). The file is a
plain dict that loads with torch.load(path, weights_only=True); model.load(path) rebuilds the
network with its preprocessing. Before it is written, the export is checked to reproduce the
trial's validation score on the study's split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import optuna

import model as model_lib
from data import DataError, format_problems
from data.cache import default_cache_dir
from data.cli import HelpFormatter, fail, setup_logging
from model import CheckpointError
from search.export import check_group, fetch_checkpoint, select_trial, stamp, study_data, verify
from search.study import StudyError, artifact_dir_for, load_study, open_storage, storage_url


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--group", required=True, help="team name: the file is <group>.pth")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL; default: "
                   "$OPTUNA_STORAGE, else sqlite:///studies.db")
    p.add_argument("--artifact-dir", default=None,
                   help="folder of the study's artifacts (default: artifacts/ next to a SQLite "
                   "file, else ./artifacts)")
    p.add_argument("--out", default="exports", help="folder to write <group>.pth into")
    p.add_argument("--trial", type=int, default=None, help="export this trial, not the best")
    p.add_argument("--data", default=None,
                   help="the study's data, if it moved since the study ran (for verification)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-scoring the validation split (e.g. the data are elsewhere)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="decoded-image cache (shared with the other commands)")
    p.add_argument("--dry-run", action="store_true", help="show what would be exported")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = storage_url(args.storage)
    try:
        group = check_group(args.group)
        study = load_study(args.study, open_storage(url))
        trial = select_trial(study, args.trial)
        artifact_dir = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url)
        ckpt = stamp(fetch_checkpoint(trial, artifact_dir), group=group, study=study,
                     trial=trial)
    except (StudyError, CheckpointError) as exc:
        return fail(str(exc))
    metric = study.user_attrs.get("space", {}).get("metric", "graded_ap")
    out = Path(args.out) / f"{group}.pth"
    print(f"study   {args.study}, trial {trial.number} ({metric} {trial.value:.4f}, "
          f"{trial.user_attrs.get('architecture', '')})")
    if args.dry_run:
        print(f"dry run: would write {out}")
        return 0

    with tempfile.TemporaryDirectory(dir=_parent(out)) as tmp:
        staged = model_lib.save_checkpoint(ckpt, Path(tmp) / out.name)
        try:
            net = model_lib.load(staged)  # the very check a user makes: weights_only=True
        except CheckpointError as exc:
            return fail(f"the exported file does not load back: {exc}")
        if not args.no_verify:
            try:
                data, split = study_data(study, args.data, cache_dir=args.cache_dir)
                check, _ = verify(net, trial, data, split, metric)
            except DataError as exc:
                return fail(f"the study's data cannot be loaded to verify the export:\n"
                            f"{format_problems(exc.problems)}\nPass --data, or --no-verify.")
            except StudyError as exc:
                return fail(f"{exc} Or skip the check with --no-verify.")
            print(f"verify  {metric} on {check.n_val} validation erasers: {check.measured:.4f} "
                  f"(trial recorded {check.stored:.4f}, difference {check.diff:.4f})")
            if not check.ok:
                return fail(f"the exported model scores {check.measured:.4f}, not the trial's "
                            f"{check.stored:.4f}; nothing was written. Was the study trained "
                            "on other data?")
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(out)
    print_contents(out, net)
    return 0


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def print_contents(path: Path, net: model_lib.InspectionModel) -> None:
    meta, cfg = net.meta, net.cfg
    val = meta.get("val_metrics", {})
    print(f"wrote   {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"holds   {model_lib.describe(cfg)}")
    print(f"        channels {', '.join(cfg.channels)}; input {cfg.input_size} px from "
          f"{meta.get('source_size')} px; thresholds "
          + ", ".join(f"{k} {v:.3f}" for k, v in net.thresholds.items()))
    print("        validation: " + ", ".join(
        f"{k} {val[k]:.4f}" for k in ("graded_ap", "graded_f1", "defect_ap", "defect_f1")
        if k in val))
    print(f"load    import model; m = model.load({str(path)!r})")


if __name__ == "__main__":
    sys.exit(main())
