"""A pytest plugin for the kernel and its plugins (registered via the ``pytest11`` entry point).

Fixtures:

* ``make_app(config=None, *, extra_plugins=None)``: build an app from a config dict
  (merged over a test default: echo agent ``main``, token ``TEST_TOKEN``, state under
  ``tmp_path``). Only the plugins the config enables are loaded.
* ``live_server(app)``: serve an app with a real Hypercorn on a free loopback port in
  a background thread; a context manager yielding the base URL.

* ``pg_url``: a fresh PostgreSQL schema on the test server (``KERNEL_TEST_PG_URL``,
  default ``postgresql://postgres@127.0.0.1:5432/test``), dropped after the test; the
  URL selects it through ``search_path``. An unreachable server fails the test (never a skip).
* ``store_backend`` / ``make_store``: parametrised over ``sqlite`` and ``postgresql``:
  ``make_store()`` gives an unopened :class:`kernel.store.Store` on this test's database
  (call it again for "the next process" on the same data).

Option ``--store-backend=postgresql`` (or ``KERNEL_TEST_STORE=postgresql``) runs every
``make_app`` test against its own PostgreSQL schema instead of the SQLite file.

Helpers: :func:`serve_process` runs ``kernel serve`` as a real subprocess (for restart,
signal and shutdown tests).
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from kernel.store import Store, open_store

TEST_TOKEN = "test-token-0123456789"
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}"}


def default_config(state_dir: Path) -> dict[str, Any]:
    """The config every test starts from: echo agent, fixed token, private state dir."""
    return {
        "kernel": {"state_dir": str(state_dir), "auth": {"token": TEST_TOKEN}, "access_log": False},
        "agents": {"main": {"provider": "echo"}},
        "plugins": {"echo": {"enabled": True}},
    }


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_app(config: dict[str, Any], path: Path, *, extra_plugins: dict[str, object] | None = None) -> Quart:
    """Validate ``config`` as if read from ``path`` and build the app."""
    from kernel.app import create_app
    from kernel.config import settings_from_dict

    return create_app(settings_from_dict(config, path), extra_plugins=extra_plugins)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: Quart, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` under a real Hypercorn in a thread; yield ``http://host:port``."""
    from hypercorn.asyncio import serve

    from kernel.serve import hypercorn_config

    port = free_port()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        limits = app.extensions["kernel"].settings.kernel
        await serve(app, hypercorn_config(host, port, min(limits.shutdown_grace_seconds, 2.0), limits),
                    shutdown_trigger=stop.wait)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"hypercorn-{port}", daemon=True)
    thread.start()
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + 20
    while True:
        if failure:
            raise RuntimeError(f"server failed to start: {failure[0]!r}") from failure[0]
        try:
            if httpx.get(f"{base}/-/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become healthy within 20s")
        time.sleep(0.05)
    try:
        yield base
    finally:
        if stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)


@dataclass
class ServedProcess:
    """A ``kernel serve`` subprocess started by :func:`serve_process`."""

    proc: subprocess.Popen[bytes]
    base: str
    stdout: Path
    stderr: Path


def write_cluster_config(folder: Path, pg_url: str, rest: str, *, lease: float = 30, workers: int = 1,
                         kernel_extra: str = "") -> Path:
    """``folder/plugins.toml`` for one process of a cluster on ``pg_url``: the kernel table
    (state under ``folder``, ``workers``, a ``lease`` in seconds, the test token) then ``rest``
    (keys, agents, providers, plugins), ready for :func:`serve_process`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\nshutdown_grace_seconds = 0.5\nworkers = {workers}\n{kernel_extra}'
        f'[kernel.store]\nurl = "{pg_url}"\nlease_seconds = {lease}\n'
        f'[kernel.auth]\ntoken = "{TEST_TOKEN}"\n{rest}',
        encoding="utf-8",
    )
    return path


@contextmanager
def serve_process(config: Path, port: int | None = None, *, timeout: float = 60,
                  args: tuple[str, ...] = ()) -> Iterator[ServedProcess]:
    """Start ``kernel serve --config CONFIG [ARGS]`` (cwd: the config's folder) and wait until healthy.

    Output goes to ``stdout-PORT.txt`` / ``stderr-PORT.txt`` beside the config. The
    process is stopped on exit if the test did not stop it: SIGTERM, so ``--workers``'
    workers drain and close their store connections first, then SIGKILL after 10 s.
    """
    port = free_port() if port is None else port
    kernel_cmd = Path(sys.executable).parent / "kernel"
    out = config.parent / f"stdout-{port}.txt"
    err = config.parent / f"stderr-{port}.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([str(kernel_cmd), "serve", "--config", str(config), "--port", str(port), *args],
                                stdout=stdout, stderr=stderr, cwd=config.parent)
    served = ServedProcess(proc, f"http://127.0.0.1:{port}", out, err)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kernel serve exited with {proc.returncode}: {err.read_text()}")
            try:
                if httpx.get(f"{served.base}/-/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"kernel serve did not become healthy: {err.read_text()}")
            time.sleep(0.1)
        yield served
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM first so workers shut down in order (closing their store connections), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
START_PG_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-backend", choices=("sqlite", "postgresql"),
                     default=os.environ.get("KERNEL_TEST_STORE", "sqlite"),
                     help="the store make_app's kernels use (PostgreSQL: a fresh schema per test)")


def _run(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a private loop in a thread (safe inside any test)."""
    out: list[Any] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            err.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0] if out else None


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _drop_schema(url: str, schema: str) -> None:
    """Drop a test schema, retrying while a just-stopped process's backend still holds its locks.

    A killed worker's PostgreSQL backend can outlive it by a moment mid-transaction; the DROP
    then waits on (or deadlocks with) it. Retrying for a few seconds lets that backend finish.
    """
    import asyncpg

    transient = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.LockNotAvailableError)
    deadline = time.monotonic() + 30
    while True:
        try:
            await _admin(url, f"SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE")
            return
        except transient:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, dropped afterwards; yields a URL that selects it."""
    base = os.environ.get("KERNEL_TEST_PG_URL", DEFAULT_PG_URL)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        _run(_admin(base, f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {base} is not usable ({exc!r}); start it with: {START_PG_HINT}", pytrace=False)
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}search_path={schema}"
    finally:
        _run(_drop_schema(base, schema))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> str:
    """Each store-level test runs once per backend."""
    return str(request.param)


@pytest.fixture
def make_store(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Store]:
    """``make_store()``: an unopened store on this test's database (the same one every call)."""
    url = request.getfixturevalue("pg_url") if store_backend == "postgresql" else ""
    return lambda: open_store(url, tmp_path / "state")


async def _pg_sql(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import asyncpg

    from kernel.store.postgres import to_dollar_params

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(row) for row in await conn.fetch(to_dollar_params(sql), *params)]
    finally:
        await conn.close()


@pytest.fixture
def state_sql(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., list[tuple[Any, ...]]]:
    """``state_sql(sql, params)``: run SQL (``?`` placeholders) on the database ``make_app``'s
    kernels use, from outside the server (to age rows, damage them, count them); returns rows."""
    url = request.getfixturevalue("pg_url") if request.config.getoption("--store-backend") == "postgresql" else ""

    def run(sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        if url:
            return _run(_pg_sql(url, sql, tuple(params)))
        import sqlite3

        with sqlite3.connect(tmp_path / "state" / "kernel.sqlite3") as db:
            return [tuple(row) for row in db.execute(sql, tuple(params)).fetchall()]

    return run


@pytest.fixture
def make_app(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Quart]:
    """Factory: ``make_app({"plugins": {"openresponses": {"enabled": True}}})``."""
    store_url = ""
    if request.config.getoption("--store-backend") == "postgresql":
        store_url = request.getfixturevalue("pg_url")

    def factory(config: dict[str, Any] | None = None, *, extra_plugins: dict[str, object] | None = None,
                replace: bool = False) -> Quart:
        base = default_config(tmp_path / "state")
        if store_url:
            base["kernel"]["store"] = {"url": store_url}
        full = (config or {}) if replace else merge(base, config or {})
        return build_app(full, tmp_path / "plugins.toml", extra_plugins=extra_plugins)

    return factory


@pytest.fixture
def live_server() -> Callable[[Quart], Any]:
    """``with live_server(app) as base_url: ...``: a real Hypercorn on loopback."""
    return serve_in_thread
