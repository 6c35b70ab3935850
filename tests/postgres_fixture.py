"""A throwaway PostgreSQL cluster for the multi-worker tests (``initdb`` + ``pg_ctl``).

The server binaries are found under ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql``
package) or on ``PATH``. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` OS user and every server command runs through ``runuser``. The cluster
listens on 127.0.0.1 at a free port with trust authentication, keeps nothing durable (fsync
off) and is stopped and deleted after the session (a session killed before its teardown
leaves it running: the next session stops and deletes it). Without the binaries the tests are
skipped, unless ``REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_counter = itertools.count()


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or the one on PATH."""
    def version(path: str) -> tuple[int, ...]:
        v = Path(path).parent.parent.name
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A running throwaway server; :meth:`new_database` gives a fresh database's URL."""

    def __init__(self, bin_dir: Path, root: Path, port: int, as_postgres: bool):
        self.bin_dir, self.root, self.port, self.as_postgres = bin_dir, root, port, as_postgres
        self.data = root / "data"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            runuser = shutil.which("runuser")
            cmd = ([runuser, "-u", "postgres", "--", *cmd] if runuser
                   else ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)])
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120,
                              cwd=self.root)

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions")
        # The socket folder is ours, not /var/run/postgresql (which may not exist).
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
                   "-c max_connections=100 -c full_page_writes=off")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                 "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def new_database(self) -> str:
        import psycopg2

        name = f"test_{os.getpid()}_{next(_counter)}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"


PREFIX = "pg-test-"
OWNER = "owner.pid"  # the test process a cluster belongs to


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(bin_dir: Path) -> None:
    """Stop and delete clusters whose test session died before its teardown (killed)."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            pid = int((root / OWNER).read_text())
        except (OSError, ValueError):
            # no owner recorded: only a folder older than any test session is surely stale
            if time.time() - root.stat().st_mtime < 6 * 3600:
                continue
            pid = None
        if pid is not None and _alive(pid):
            continue
        cluster = PostgresCluster(bin_dir, root, 0, as_postgres=os.geteuid() == 0)
        if (root / "data" / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole test session."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; install the "
                     "Debian package 'postgresql'")
    _sweep(bin_dir)
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    (root / OWNER).write_text(str(os.getpid()))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            _unavailable("running as root and there is no 'postgres' OS user to own the "
                         "cluster (PostgreSQL refuses to run as root)")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(bin_dir, root, _free_port(), as_postgres=os.geteuid() == 0)
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        detail = (exc.stderr or "") + (log.read_text() if log.exists() else "")
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"the throwaway PostgreSQL server did not start: {detail.strip()[-800:]}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the throwaway server, as a SQLAlchemy URL."""
    return postgres_cluster.new_database()
