"""``kernel serve --workers N``: N server processes accepting on one port.

The parent binds the port once and starts N worker processes (``spawn``: each builds
its own app, store pool and event loop from the config file), handing each the bound
sockets; the kernel accepts connections in every worker. Workers share state only
through the PostgreSQL store (leases, notifications, advisory locks: docs/scaling.md),
so more than one worker needs ``[kernel.store] url = "postgresql://..."``.

SIGINT/SIGTERM to the parent is passed on to every worker, which drains as a single
server does. A worker that exits on its own (a crash, or a failed start) stops the
others: a supervisor (systemd, a container runtime) restarts the whole server.

Metrics: a scraper reaches one worker at random, so the workers write their figures to a
folder they share and any of them answers for all (prometheus_client's multiprocess
mode). prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when first imported,
so only this parent can set it (before the workers start); it also empties the folder
of a previous run and marks each exited worker dead (prometheus_client's
``mark_process_dead``: its gauges stop counting), which is the process manager's part of
that protocol. The observability plugin does the rest in each worker.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
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
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


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


def prepare_metrics_dir(state_dir: Path, port: int) -> Path:
    """The workers' shared metrics folder, emptied, named in ``PROMETHEUS_MULTIPROC_DIR``:
    the operator's own if the variable is set (e.g. on a tmpfs), else
    ``<state_dir>/metrics/port-<port>`` (one per server: two servers never share a port)."""
    given = os.environ.get(METRICS_DIR_ENV)
    path = Path(given) if given else state_dir / "metrics" / f"port-{port}"
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's: its totals must not add to this one's
        stale.unlink()
    os.environ[METRICS_DIR_ENV] = str(path)  # inherited by the workers spawned after this
    return path


def _mark_dead(pid: int | None, metrics_dir: Path) -> None:
    """Tell prometheus_client's multiprocess files that worker ``pid`` is gone."""
    if pid is None:
        return
    try:
        from prometheus_client.multiprocess import mark_process_dead
    except ImportError:  # no metrics without it: nothing to mark
        return
    try:
        mark_process_dead(pid, str(metrics_dir))
    except OSError:
        log.exception("could not mark worker %d dead in %s", pid, metrics_dir)


def serve_workers(config_path: Path, host: str, port: int, sockets: Sockets, workers: int, log_level: str,
                  state_dir: Path) -> int:
    """Run ``workers`` worker processes on the bound ``sockets`` until a signal; the exit code."""
    metrics_dir = prepare_metrics_dir(state_dir, port)
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
    marked: set[int] = set()
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            if not proc.is_alive() and proc.pid not in marked:
                _mark_dead(proc.pid, metrics_dir)
                marked.add(proc.pid or 0)
            if not proc.is_alive() and proc.exitcode not in (None, 0) and not stopping:
                log.error("worker %s exited with %s; stopping the others", proc.name, proc.exitcode)
                code = 1
                on_signal(signal.SIGTERM, None)
        time.sleep(0.2)
    for proc in procs:
        proc.join()
        if proc.pid not in marked:
            _mark_dead(proc.pid, metrics_dir)
    return code
