"""Durable state behind one small interface: SQLite by default (aiosqlite).

Plugins own their tables (created with :meth:`Store.ensure_schema`); the kernel owns
``sessions``. Two connections: writes go through :meth:`Store.transaction` (one writer
at a time, commit or roll back as a unit) on the write connection; :meth:`Store.fetchall`
and :meth:`Store.fetchone` use a separate read-only connection. With one shared
connection a read issued while another task's transaction is open (between its awaits)
would see that transaction's uncommitted rows, which may yet be rolled back; in WAL mode
the read connection sees exactly the last committed state and never waits for a writer.
A transaction that must read its own uncommitted writes reads through the connection
``transaction()`` yields.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from kernel.observe import Observers


class Store:
    """An async SQLite database file under the state directory."""

    def __init__(self, path: Path, *, observers: Observers | None = None) -> None:
        self.path = path
        # Told of every write transaction (latency metrics, trace spans); see kernel.observe.
        self.observers = observers if observers is not None else Observers()
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Open (creating) the database with WAL and foreign keys on, then the read connection."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        try:
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA journal_mode=WAL")  # persistent: the reader gets it too
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.commit()
            self._reader = await aiosqlite.connect(self.path)
            self._reader.row_factory = aiosqlite.Row
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._reader.execute("PRAGMA query_only=ON")  # a write here would bypass the write lock
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close both connections; safe to call twice."""
        for conn in (self._reader, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._reader = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The write connection (use it inside :meth:`transaction`)."""
        if self._db is None:
            raise RuntimeError("store is not open (the app has not started)")
        return self._db

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection: it sees committed rows only."""
        if self._reader is None:
            raise RuntimeError("store is not open (the app has not started)")
        return self._reader

    async def ensure_schema(self, statements: Iterable[str]) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) in one transaction."""
        async with self.transaction() as db:
            for stmt in statements:
                await db.execute(stmt)

    @asynccontextmanager
    async def transaction(self, label: str = "other", items: int = 1) -> AsyncIterator[aiosqlite.Connection]:
        """Serialise writers and commit on success, roll back on error.

        ``label`` (a fixed word such as ``"sessions"``) and ``items`` (how many records the
        transaction writes) are only reported to observers, for store metrics and spans.
        """
        observers = self.observers
        started = time.time() if observers else 0.0
        clock = time.perf_counter() if observers else 0.0
        ok = False
        try:
            async with self._write_lock:
                try:
                    yield self.db
                except BaseException:
                    await self.db.rollback()
                    raise
                else:
                    await self.db.commit()
                    ok = True
        finally:
            if observers:
                observers.store_write(label, items, started, time.perf_counter() - clock, ok)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write statement in its own transaction."""
        async with self.transaction() as db:
            await db.execute(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """Every row of a query, as committed (never another task's open transaction)."""
        async with self.reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a query, as committed, or None."""
        async with self.reader.execute(sql, params) as cur:
            return await cur.fetchone()
