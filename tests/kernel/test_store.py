"""The SQLite store: transactions commit or roll back as a unit; reads see committed rows only."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kernel.store import Store

SCHEMA = ["CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)"]


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(tmp_path / "state" / "kernel.sqlite3")
    await store.open()
    await store.ensure_schema(SCHEMA)
    yield store
    await store.close()


async def bodies(store: Store) -> list[str]:
    return [row["body"] for row in await store.fetchall("SELECT body FROM notes ORDER BY rowid")]


async def test_a_read_during_another_tasks_transaction_sees_only_committed_rows(store):
    await store.execute("INSERT INTO notes (body) VALUES ('committed')")
    inside, release = asyncio.Event(), asyncio.Event()

    async def writer_that_rolls_back() -> None:
        async with store.transaction() as db:
            await db.execute("INSERT INTO notes (body) VALUES ('draft')")
            # A transaction can read its own uncommitted rows through the connection it holds.
            async with db.execute("SELECT COUNT(*) FROM notes") as cur:
                assert (await cur.fetchone())[0] == 2
            inside.set()
            await release.wait()
            raise RuntimeError("changed my mind")

    task = asyncio.create_task(writer_that_rolls_back())
    await inside.wait()
    # The transaction is open, between two of its awaits: its row must not be visible.
    assert await bodies(store) == ["committed"]
    assert await store.fetchone("SELECT body FROM notes WHERE body = 'draft'") is None
    release.set()
    with pytest.raises(RuntimeError, match="changed my mind"):
        await task
    assert await bodies(store) == ["committed"]


async def test_a_committed_write_is_visible_to_the_next_read(store):
    async with store.transaction() as db:
        await db.execute("INSERT INTO notes (body) VALUES ('one')")
        await db.execute("INSERT INTO notes (body) VALUES ('two')")
    assert await bodies(store) == ["one", "two"]
    await store.execute("DELETE FROM notes WHERE body = 'one'")
    assert await bodies(store) == ["two"]


async def test_the_read_connection_refuses_writes(store):
    # Writes must go through transaction(): a write on the read connection would skip the lock.
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.fetchall("INSERT INTO notes (body) VALUES ('sneaky')")
    assert await bodies(store) == []


async def test_rows_survive_reopening_and_close_is_idempotent(tmp_path: Path):
    path = tmp_path / "kernel.sqlite3"
    first = Store(path)
    await first.open()
    await first.ensure_schema(SCHEMA)
    await first.execute("INSERT INTO notes (body) VALUES ('kept')")
    await first.close()
    await first.close()
    with pytest.raises(RuntimeError, match="store is not open"):
        await first.fetchall("SELECT 1")
    second = Store(path)
    await second.open()
    try:
        assert await bodies(second) == ["kept"]
        journal = await second.fetchone("PRAGMA journal_mode")
        assert journal[0] == "wal"
    finally:
        await second.close()
