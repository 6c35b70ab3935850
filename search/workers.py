"""Run K worker processes on one study and watch them: the supervisor behind ``--workers``.

Each worker is the same command with ``--worker-index i`` added; it trains trials of the
study that the parent created, until the study holds its total. The parent only relays their
output and the study's progress through callbacks (the command draws them) and passes
Ctrl-C/SIGTERM on. The storage URL (maybe with a password) reaches the workers in their
environment, never on their command lines, where ``ps`` would show it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

import optuna

from search.study import STORAGE_ENV, n_finished

log = logging.getLogger(__name__)


def without_storage(argv: Sequence[str]) -> list[str]:
    """``argv`` minus ``--storage URL`` / ``--storage=URL``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--storage":
            skip = True
        elif not arg.startswith("--storage="):
            out.append(arg)
    return out


def start_workers(command: Sequence[str], n: int, storage_url: str) -> list[subprocess.Popen]:
    """Start ``n`` copies of ``command`` (which must not name the storage), each with its
    ``--worker-index``; the storage URL goes in ``$OPTUNA_STORAGE``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", STORAGE_ENV: storage_url}
    return [subprocess.Popen([*command, "--worker-index", str(i)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True)  # Ctrl-C reaches them through us only
            for i in range(n)]


def supervise(procs: list[subprocess.Popen], study: optuna.Study, *,
              on_line: Callable[[int, str], None],
              on_progress: Callable[[int], None], poll_seconds: float = 1.0) -> list[int]:
    """Relay each worker's lines to ``on_line(index, line)`` and the study's finished count
    to ``on_progress`` until every worker has ended; returns their exit codes. Ctrl-C
    (``KeyboardInterrupt``) stops the workers (:func:`stop_workers`) and propagates."""
    def relay(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            on_line(i, line.rstrip())

    threads = [threading.Thread(target=relay, args=(i, p), daemon=True)
               for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    try:
        while any(p.poll() is None for p in procs):
            on_progress(n_finished(study))
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        stop_workers(procs)
        raise
    finally:
        for t in threads:
            t.join(timeout=5)
        on_progress(n_finished(study))
    return [p.returncode for p in procs]


def stop_workers(procs: list[subprocess.Popen], grace: float = 60.0) -> None:
    """Pass Ctrl-C/SIGTERM on to the workers and wait for them to end their trials.

    A worker still running after ``grace`` seconds (or after a second Ctrl-C) is killed: its
    trial then goes stale and is failed and retried by the heartbeat, so nothing is lost and
    no worker outlives this process (they run in their own sessions).
    """
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                log.warning("worker %d did not stop in time; killed", p.pid)
                p.kill()
            p.wait()
