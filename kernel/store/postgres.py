"""The server backend: PostgreSQL through an asyncpg connection pool.

SQL arrives with ``?`` placeholders (the store's one dialect) and is rewritten to
asyncpg's ``$1, $2 ...`` once per distinct statement. Each transaction holds one pooled
connection; reads outside a transaction take any connection and see committed rows.
Advisory locks are keyed by the current schema, so test schemas (and deployments
that share one database through ``search_path``) never block each other.

Several processes share one database: besides the pool, each holds one *control*
connection (``LISTEN`` for notifications, and the housekeeping leader's session
advisory lock, which dies with the process) and a small separate pool for key locks
held across transactions (session turns), so waiting on a lock never starves the
pool the lock holder needs for its writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kernel.store.base import Dialect, Store, Subscriber

log = logging.getLogger("kernel.store")

# Advisory lock names (hashed with the schema name into a 64-bit key).
MIGRATION_LOCK = "agentkernel:migrate"
LEADER_LOCK = "agentkernel:leader"
_LOCK_KEY = "hashtextextended($1 || ':' || current_schema(), 0)"
# Channels are identifiers; the schema suffix keeps test schemas (and deployments sharing
# one database through search_path) from hearing each other.
_CHANNEL = "{channel}_{schema}"


@functools.lru_cache(maxsize=2048)
def to_dollar_params(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2 ...``, leaving quoted text and identifiers alone."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def redacted(url: str) -> str:
    """The URL without its password (for logs and status output)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class PostgresTransaction:
    """A pooled connection inside a transaction."""

    dialect: Dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if params:
            return _rowcount(await self._conn.execute(to_dollar_params(sql), *params))
        return _rowcount(await self._conn.execute(sql))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._conn.executemany(to_dollar_params(sql), rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.fetch(to_dollar_params(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return await self._conn.fetchrow(to_dollar_params(sql), *params)

    async def lock(self, key: str) -> None:
        """A transaction-scoped advisory lock: held until commit or rollback, in every process."""
        await self._conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})", key)

    async def notify(self, channel: str, payload: str) -> None:
        """``pg_notify``: delivered to every listening process when (and only if) this commits."""
        await self._conn.execute("SELECT pg_notify($1 || '_' || current_schema(), $2)", channel, payload)


class PostgresStore(Store):
    """A PostgreSQL database named by URL (``postgresql://user@host:port/db``)."""

    dialect: Dialect = "postgresql"
    shared = True

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lock_pool: asyncpg.Pool | None = None
        self._control: asyncpg.Connection | None = None
        self._control_ops = asyncio.Lock()  # asyncpg runs one operation at a time per connection
        self._leading = False
        self._schema = ""

    def describe(self) -> str:
        return f"postgresql {redacted(self.url)}"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size)
            self._lock_pool = await asyncpg.create_pool(self.url, min_size=0, max_size=4 * self.pool_size)
            self._schema = await self._pool.fetchval("SELECT current_schema()") or "public"
        except (OSError, asyncpg.PostgresError) as exc:
            where = redacted(self.url)
            raise ConnectionError(f"cannot open the store at {where} ([kernel.store] url): {exc}") from None

    async def close(self) -> None:
        control, self._control, self._leading = self._control, None, False
        if control is not None and not control.is_closed():
            await control.close()  # closing the session drops the leader lock
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._lock_pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open (the app has not started)")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The migration lock: N processes starting at once migrate once, the others wait."""
        async with self.pool.acquire() as conn:
            await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", MIGRATION_LOCK)
            try:
                yield
            finally:
                await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", MIGRATION_LOCK)

    # ------------------------------------------------------------------ across processes

    async def _control_conn(self) -> asyncpg.Connection:
        """The control connection, (re)opened when missing or lost, its listeners re-added
        (callers hold ``_control_ops``)."""
        conn = self._control
        if conn is not None and not conn.is_closed():
            return conn
        if conn is not None:
            log.warning("store: the control connection was lost; reconnecting (leadership given up)")
        self._leading = False
        conn = await asyncpg.connect(self.url)
        for channel in self._subscribers():
            await conn.add_listener(self._channel(channel), self._on_notification)
        self._control = conn
        return conn

    def _channel(self, channel: str) -> str:
        return _CHANNEL.format(channel=channel, schema=self._schema)

    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        suffix = "_" + self._schema
        if channel.endswith(suffix):
            self._dispatch(channel[: -len(suffix)], payload)

    async def subscribe(self, channel: str, subscriber: Subscriber) -> Callable[[], None]:
        """``LISTEN`` on the control connection (once per channel); see :meth:`Store.subscribe`."""
        fresh = channel not in self._subscribers()
        unsubscribe = await super().subscribe(channel, subscriber)
        async with self._control_ops:  # one operation at a time on the connection
            conn = await self._control_conn()
            if fresh and not conn.is_closed():
                await conn.add_listener(self._channel(channel), self._on_notification)
        return unsubscribe

    async def notify(self, channel: str, payload: str) -> None:
        await self.pool.execute("SELECT pg_notify($1 || '_' || current_schema(), $2)", channel, payload)

    async def lead(self) -> bool:
        """The leader holds a session advisory lock on its control connection: when the
        process dies, its connection (and the role) goes, and the next caller takes it."""
        async with self._control_ops:
            conn = await self._control_conn()
            if not self._leading:
                self._leading = bool(await conn.fetchval(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", LEADER_LOCK))
                if self._leading:
                    log.info("store: this process leads housekeeping (retention sweeps, expired leases)")
            return self._leading

    @asynccontextmanager
    async def key_lock(self, key: str) -> AsyncIterator[None]:
        """A session advisory lock on a connection of the lock pool, held for the block."""
        if self._lock_pool is None:
            raise RuntimeError("store is not open (the app has not started)")
        async with self._lock_pool.acquire() as conn:
            await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", key)
            try:
                yield
            finally:
                await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", key)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.pool.fetch(to_dollar_params(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return await self.pool.fetchrow(to_dollar_params(sql), *params)
