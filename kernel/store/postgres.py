"""The server backend: PostgreSQL through an asyncpg connection pool.

SQL arrives with ``?`` placeholders (the store's one dialect) and is rewritten to
asyncpg's ``$1, $2 ...`` once per distinct statement. Each transaction holds one pooled
connection; reads outside a transaction take any connection and see committed rows.
Advisory locks are keyed by the current schema, so test schemas (and deployments
that share one database through ``search_path``) never block each other.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kernel.store.base import Dialect, Store

log = logging.getLogger("kernel.store")

# Advisory lock names (hashed with the schema name into a 64-bit key).
MIGRATION_LOCK = "agentkernel:migrate"
INSTANCE_LOCK = "agentkernel:instance"
_LOCK_KEY = "hashtextextended($1 || ':' || current_schema(), 0)"


class StoreBusyError(RuntimeError):
    """Another gateway process already serves this database."""


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


class PostgresStore(Store):
    """A PostgreSQL database named by URL (``postgresql://user@host:port/db``)."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._instance: asyncpg.Connection | None = None

    def describe(self) -> str:
        return f"postgresql {redacted(self.url)}"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            where = redacted(self.url)
            raise ConnectionError(f"cannot open the store at {where} ([kernel.store] url): {exc}") from None

    async def close(self) -> None:
        if self._instance is not None:
            await self._instance.close()  # closing the session drops its advisory lock
            self._instance = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

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

    async def claim(self) -> None:
        """Claim the database for this process until :meth:`close`.

        Until runs carry leases (docs/scaling.md), a starting process fails every
        in-flight run it finds, so a second process on the same database would fail
        the first one's live runs: refuse it instead, with a clear error.
        """
        conn = await asyncpg.connect(self.url)
        got = await conn.fetchval(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", INSTANCE_LOCK)
        if not got:
            await conn.close()
            raise StoreBusyError(
                f"another kernel process is serving the store at {redacted(self.url)}; this release runs one "
                "process per database (several processes sharing one need run leases, see docs/scaling.md)")
        self._instance = conn

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.pool.fetch(to_dollar_params(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return await self.pool.fetchrow(to_dollar_params(sql), *params)
