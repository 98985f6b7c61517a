"""``kernel serve --workers N``: N server processes accepting on one port.

The parent binds the port once and starts N worker processes (``spawn``: each builds
its own app, store pool and event loop from the config file), handing each the bound
sockets; the kernel accepts connections in every worker. Workers share state only
through the PostgreSQL store (leases, notifications, advisory locks: docs/scaling.md),
so more than one worker needs ``[kernel.store] url = "postgresql://..."``.

SIGINT/SIGTERM to the parent is passed on to every worker, which drains as a single
server does. A worker that exits on its own (a crash, or a failed start) stops the
others: a supervisor (systemd, a container runtime) restarts the whole server.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from hypercorn.config import Sockets

from kernel.config import Settings
from kernel.errors import ConfigError
from kernel.store import is_postgres_url

log = logging.getLogger("kernel")

PR_SET_PDEATHSIG = 1


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse several workers on SQLite with a clear error (one process per state directory)."""
    if workers > 1 and not is_postgres_url(settings.kernel.store.url):
        raise ConfigError(
            f"--workers {workers} (or [kernel] workers) needs a PostgreSQL store: the default SQLite store is one "
            f"process per state directory; set [kernel.store] url = \"postgresql://...\" in {settings.path}, "
            "or serve with one worker")


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies (even by SIGKILL), so none is orphaned."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a supervisor must stop the workers
        pass


def _worker(config_path: str, host: str, port: int, sockets: Sockets, log_level: str, index: int) -> None:
    _die_with_parent()
    from kernel.app import create_app
    from kernel.config import load_settings
    from kernel.logfmt import configure_logging
    from kernel.serve import serve

    configure_logging(log_level)
    app = create_app(load_settings(Path(config_path)))
    log.info("worker %d (pid %d) starting", index, multiprocessing.current_process().pid)
    try:
        asyncio.run(serve(app, host, port, sockets=sockets))
    except KeyboardInterrupt:
        pass


def serve_workers(config_path: Path, host: str, port: int, sockets: Sockets, workers: int, log_level: str) -> int:
    """Run ``workers`` worker processes on the bound ``sockets`` until a signal; the exit code."""
    context = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    for index in range(workers):
        proc = context.Process(target=_worker, name=f"kernel-worker-{index}",
                               args=(str(config_path), host, port, sockets, log_level, index))
        proc.start()
        procs.append(proc)
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the worker drains like a single server

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("serving on %s:%d with %d worker processes", host, port, workers)
    code = 0
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            if not proc.is_alive() and proc.exitcode not in (None, 0) and not stopping:
                log.error("worker %s exited with %s; stopping the others", proc.name, proc.exitcode)
                code = 1
                on_signal(signal.SIGTERM, None)
        time.sleep(0.2)
    for proc in procs:
        proc.join()
    return code
