"""``python dashboard.py [--storage URL] [--artifact-dir DIR]``: serve optuna-dashboard for the
studies in a storage, with their trial figures and notes, e.g. for a study that runs in
another terminal or on other machines (``reporting.dashboard``). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import sqlalchemy.engine
import sqlalchemy.exc

from cli.checks import PORT, bad_number
from cli.common import HelpFormatter, add_study_location, fail, setup_logging
from reporting.dashboard import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DashboardError,
    base_url,
    exposure_warning,
    serve,
)
from search.study import (
    StudyError,
    artifact_dir_for,
    mask_url,
    open_storage,
    storage_url,
    study_names,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="Serve optuna-dashboard for the studies in a storage, with their trial "
        "figures and notes (artifacts), e.g. for a study that runs in another terminal or on "
        "other machines. Ctrl-C stops it.")
    add_study_location(p)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on; anything but "
                   "loopback exposes the dashboard, which has no authentication")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the storage and list its studies, serve nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--ready-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--exit-with-parent", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    child = args.ready_file is not None  # started by start(): it reports through the log
    url = storage_url(args.storage)
    problem = bad_number([("--port", args.port, PORT)])
    if problem:
        return fail(problem)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return fail(f"storage URL {mask_url(url)!r} is not a database URL, e.g. "
                    "sqlite:///studies.db or postgresql+psycopg2://user@host/db.")
    if (parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).is_file()):
        # Opening it would create an empty database: a typo must not look like "no studies".
        return fail(f"there is no SQLite storage at {parsed.database}. Pass the file the "
                    "study writes to with --storage sqlite:///PATH.")
    artifact_dir = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url)
    if not child:
        try:
            names = study_names(open_storage(url))
        except StudyError as exc:
            return fail(str(exc))
        print(f"storage    {mask_url(url)} ({', '.join(names) or 'no studies yet'})")
        print(f"artifacts  {artifact_dir}"
              + ("" if artifact_dir.is_dir() else " (does not exist yet: no figures to show)"))
        warning = exposure_warning(args.host, args.port)
        if warning:
            print(warning, file=sys.stderr)
        if args.dry_run:
            print(f"dry run: would serve {base_url(args.host, args.port)}")
            return 0

    def on_ready(port: int) -> None:
        if child:  # atomically, so that start() never reads half a number
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(str(port))
            os.replace(tmp, args.ready_file)
        else:
            print(f"dashboard  {base_url(args.host, port)}  (Ctrl-C stops it)", flush=True)

    try:
        serve(url, artifact_dir, host=args.host, port=args.port, on_ready=on_ready,
              parent_pid=args.exit_with_parent)
    except (StudyError, DashboardError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
