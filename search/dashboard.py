"""Watch a study live: optuna-dashboard on the study's storage and artifact folder.

``python -m search.dashboard`` serves the dashboard of a study that runs elsewhere (another
terminal, other machines sharing a PostgreSQL storage). ``run_study.py --dashboard`` and the
notebook use :func:`start`, which runs the same server in a child process so that training
never slows the pages down, and :meth:`Dashboard.stop` (or a ``with`` block) to end it.

The storage URL reaches the child through ``$OPTUNA_STORAGE``, never its command line, where
other users of the machine could read a password. optuna-dashboard has no authentication: it
binds to 127.0.0.1 unless told otherwise, and any other address prints a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import sqlalchemy.engine
import sqlalchemy.exc

from data.cli import HelpFormatter, fail, setup_logging
from search.study import (
    STORAGE_ENV,
    StudyError,
    artifact_dir_for,
    mask_url,
    open_storage,
    storage_url,
    study_names,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ROOT = Path(__file__).resolve().parents[1]  # so that `-m search.dashboard` imports from any cwd


class DashboardError(Exception):
    """The dashboard could not start (message is user-facing)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning to print when the dashboard listens on more than this machine."""
    if is_loopback(host):
        return None
    where = f"{host}:{port}" if port else f"{host} (a free port)"
    port = port or DEFAULT_PORT
    return (f"warning: the dashboard listens on {where} and has no authentication: "
            "anyone who can reach that address can read this study and change or delete it. "
            f"Use it on a trusted network only, or keep --dashboard-host {DEFAULT_HOST} and "
            f"open an SSH tunnel (ssh -L {port}:127.0.0.1:{port} THIS_MACHINE).")


def base_url(host: str, port: int) -> str:
    """The address to open in a browser for a server bound to ``host``:``port``."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()  # bound to every interface: any of its names works
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def study_path(study: optuna.Study | int) -> str:
    """The dashboard page of a study (optuna-dashboard addresses studies by storage id)."""
    study_id = study if isinstance(study, int) else study._study_id
    return f"/dashboard/studies/{study_id}"


class Dashboard:
    """A running optuna-dashboard child process; ``stop()`` it or use it in a ``with``."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log_file: Path):
        self.process = process
        self.host = host
        self.port = port
        self.url = base_url(host, port)
        self._log_file = log_file

    def study_url(self, study: optuna.Study | int) -> str:
        return self.url + study_path(study)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """End the server (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until the server ends (Ctrl-C interrupts the wait); returns its exit code."""
        return self.process.wait()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(url: str, artifact_dir: str | Path | None = None, *, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, timeout: float = 60.0) -> Dashboard:
    """Serve the studies of storage ``url`` (and the artifacts in ``artifact_dir``) from a
    child process; returns once the dashboard answers. ``port=0`` picks a free port.

    Raises :class:`DashboardError` (port in use, storage unreachable, ...). The child ends
    with this process even if it is killed without a chance to stop it.
    """
    artifact_dir = Path(artifact_dir) if artifact_dir else artifact_dir_for(url)
    fd, ready = tempfile.mkstemp(prefix="dashboard-", suffix=".port")
    os.close(fd)
    ready_file = Path(ready)
    ready_file.unlink()
    log_fd, log_name = tempfile.mkstemp(prefix="dashboard-", suffix=".log")
    env = {**os.environ, STORAGE_ENV: url,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    cmd = [sys.executable, "-m", "search.dashboard", "--artifact-dir", str(artifact_dir),
           "--host", host, "--port", str(port), "--ready-file", str(ready_file),
           "--exit-with-parent", str(os.getpid())]
    with os.fdopen(log_fd, "wb") as log_out:
        # A session of its own: Ctrl-C in the terminal reaches the study, which then stops
        # the dashboard itself (and can keep it open with --keep-dashboard).
        process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log_out,
                                   start_new_session=True)
    dashboard = Dashboard(process, host, port, Path(log_name))
    deadline = time.monotonic() + timeout
    try:
        while not _read_port(ready_file, dashboard):
            if process.poll() is not None:
                raise DashboardError(_failure(Path(log_name), host, port))
            if time.monotonic() > deadline:
                raise DashboardError(f"optuna-dashboard did not start within {timeout:.0f} s.")
            time.sleep(0.1)
        _wait_until_answering(dashboard, deadline)
    except BaseException:
        dashboard.stop()
        raise
    finally:
        ready_file.unlink(missing_ok=True)
    log.info("optuna-dashboard serving %s at %s", mask_url(url), dashboard.url)
    return dashboard


def _read_port(ready_file: Path, dashboard: Dashboard) -> bool:
    try:
        text = ready_file.read_text().strip()
    except FileNotFoundError:
        return False
    if not text:
        return False  # being written
    dashboard.port = int(text)
    dashboard.url = base_url(dashboard.host, dashboard.port)
    return True


def _wait_until_answering(dashboard: Dashboard, deadline: float) -> None:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(dashboard.host,
                                                                   dashboard.host)
    probe = f"{base_url(host, dashboard.port)}/api/meta"
    # Straight to the local server, whatever $http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(probe, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if dashboard.process.poll() is not None or time.monotonic() > deadline:
            raise DashboardError(f"optuna-dashboard does not answer at {probe}.")
        time.sleep(0.2)


def _failure(log_file: Path, host: str, port: int) -> str:
    # The child ends with a one-paragraph message (data.cli.fail); pass it on, unwrapped.
    text = " ".join(log_file.read_text(errors="replace").split())[-2000:]
    return text or f"optuna-dashboard exited at start on {host}:{port} without saying why."


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser holding a connection open must not block shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request: noise
        pass


def serve(url: str, artifact_dir: str | Path, *, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, on_ready: Callable[[int], None] | None = None,
          parent_pid: int | None = None) -> None:
    """Run optuna-dashboard in this process until interrupted (or until process
    ``parent_pid`` is gone); ``on_ready(port)`` is called once it listens.

    Raises :class:`StudyError` (storage) or :class:`DashboardError` (address in use).
    """
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    storage = open_storage(url)
    app = wsgi(storage, artifact_store=FileSystemArtifactStore(str(artifact_dir)))
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise DashboardError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another dashboard may "
            "be running there; pick another port (--dashboard-port / --port).") from None
    if on_ready is not None:
        on_ready(server.server_port)
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(server, parent_pid),
                         daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def _exit_with_parent(server: WSGIServer, parent_pid: int) -> None:
    # The parent normally stops us; if it died without doing so, we are re-parented.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    server.shutdown()


def serve_until_interrupted(dashboard: Dashboard) -> None:
    """For ``--keep-dashboard``: say where it is and serve until Ctrl-C (CLI helper)."""
    if not dashboard.running:
        return
    print(f"\nThe dashboard keeps serving {dashboard.url} ; Ctrl-C stops it.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        dashboard.wait()


def hold_on_exit(dashboard: Dashboard) -> Callable[..., None]:
    """An ``ExitStack.push`` callback for ``--keep-dashboard``: after a normal end (Ctrl-C
    of the study included) keep serving until Ctrl-C; after a crash, don't wait."""
    def hold(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            serve_until_interrupted(dashboard)
    return hold


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search.dashboard", formatter_class=HelpFormatter,
        description="Serve optuna-dashboard for the studies in a storage, with their trial "
        "figures and notes (artifacts), e.g. for a study that runs in another terminal or on "
        "other machines. Ctrl-C stops it.")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL; default: $OPTUNA_STORAGE, "
                   "else sqlite:///studies.db")
    p.add_argument("--artifact-dir", default=None, help="the study's artifact folder "
                   "(default: artifacts/ next to a SQLite file, else ./artifacts)")
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
    if not 0 <= args.port <= 65535:
        return fail(f"--port must be between 0 and 65535, not {args.port}.")
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
