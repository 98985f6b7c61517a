"""Durable state behind one small interface: SQLite by default (aiosqlite).

Plugins own their tables (created with :meth:`Store.ensure_schema`); the kernel owns
``sessions``. One connection is shared; SQLite serialises writers, WAL lets readers
proceed, and every multi-statement change runs in a transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite


class Store:
    """An async SQLite database file under the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Open (creating) the database with WAL and foreign keys on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.commit()

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open (the app has not started)")
        return self._db

    async def ensure_schema(self, statements: Iterable[str]) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) in one transaction."""
        async with self.transaction() as db:
            for stmt in statements:
                await db.execute(stmt)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Serialise writers and commit on success, roll back on error."""
        async with self._write_lock:
            try:
                yield self.db
            except BaseException:
                await self.db.rollback()
                raise
            else:
                await self.db.commit()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write statement in its own transaction."""
        async with self.transaction() as db:
            await db.execute(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()
