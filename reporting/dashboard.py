"""Watch a study live: optuna-dashboard on the study's storage and artifact folder.

The command ``python dashboard.py`` serves the dashboard of a study that runs elsewhere (another
terminal, other machines sharing a PostgreSQL storage). ``run_study.py --dashboard`` and the
notebook use :func:`start`, which runs the same server in a child process so that training
never slows the pages down, and :meth:`Dashboard.stop` (or a ``with`` block) to end it.

The storage URL reaches the child through ``$OPTUNA_STORAGE``, never its command line, where
other users of the machine could read a password. optuna-dashboard has no authentication: it
binds to 127.0.0.1 unless told otherwise, and any other address prints a warning.
"""

from __future__ import annotations

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
from optuna.artifacts import FileSystemArtifactStore

from search.study import (
    STORAGE_ENV,
    artifact_dir_for,
    mask_url,
    open_storage,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ROOT = Path(__file__).resolve().parents[1]  # dashboard.py, the command the child runs


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
    cmd = [sys.executable, str(ROOT / "dashboard.py"), "--artifact-dir", str(artifact_dir),
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
    # The child ends with a one-paragraph message (cli.common.fail); pass it on, unwrapped.
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
    # Only the dashboard's own process serves: importing optuna_dashboard takes seconds,
    # which run_study.py and the notebook (that start that process) should not pay.
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
