"""The embedded backend: one SQLite file under the state directory (aiosqlite), the default.

Two connections: writes go through :meth:`SqliteStore.transaction` (one writer at a
time, commit or roll back as a unit) on the write connection; :meth:`SqliteStore.fetchall`
and :meth:`SqliteStore.fetchone` use a separate read-only connection. With one shared
connection a read issued while another task's transaction is open (between its awaits)
would see that transaction's uncommitted rows, which may yet be rolled back; in WAL mode
the read connection sees exactly the last committed state and never waits for a writer.
One process owns the file (the state-directory lock, :mod:`kernel.statelock`).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from kernel.store.base import Dialect, Store


class SqliteTransaction:
    """The write connection, inside a transaction."""

    dialect: Dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.notices: list[tuple[str, str]] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._db.execute(sql, params) as cur:
            return max(cur.rowcount, 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def lock(self, key: str) -> None:
        """Nothing to do: SQLite transactions are serialised already (one writer)."""

    async def notify(self, channel: str, payload: str) -> None:
        """Held until commit, then told to this process's subscribers (the only process)."""
        self.notices.append((channel, payload))


class SqliteStore(Store):
    """An async SQLite database file."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sqlite {self.path}"

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

    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise RuntimeError("store is not open (the app has not started)")
        return conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqliteTransaction]:
        """Serialise writers and commit on success, roll back on error."""
        async with self._write_lock:
            db = self._conn(self._db)
            tx = SqliteTransaction(db)
            try:
                yield tx
            except BaseException:
                await db.rollback()
                raise
            else:
                await db.commit()
        for channel, payload in tx.notices:
            self._dispatch(channel, payload)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """An flock beside the database file: one migrator at a time, in any process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".migrate.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # flock blocks: wait in a thread so the event loop keeps serving.
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._conn(self._reader).execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        async with self._conn(self._reader).execute(sql, params) as cur:
            return await cur.fetchone()
