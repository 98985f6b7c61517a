"""The store on both backends: transactions commit or roll back as a unit, reads see committed
rows only, rows survive reopening; then what is particular to the SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kernel.store import SqliteStore, Store

SCHEMA = ["CREATE TABLE IF NOT EXISTS notes (n INTEGER PRIMARY KEY, body TEXT NOT NULL)"]


@pytest.fixture
async def store(make_store):
    store = make_store()
    await store.open()
    await store.ensure_schema(SCHEMA)
    yield store
    await store.close()


async def bodies(store: Store) -> list[str]:
    return [row["body"] for row in await store.fetchall("SELECT body FROM notes ORDER BY n")]


async def add(db, n: int, body: str) -> int:
    return await db.execute("INSERT INTO notes (n, body) VALUES (?, ?)", (n, body))


async def test_a_read_during_another_tasks_transaction_sees_only_committed_rows(store):
    await add(store, 1, "committed")
    inside, release = asyncio.Event(), asyncio.Event()

    async def writer_that_rolls_back() -> None:
        async with store.transaction() as db:
            await add(db, 2, "draft")
            # A transaction can read its own uncommitted rows through the connection it holds.
            assert (await db.fetchone("SELECT COUNT(*) FROM notes"))[0] == 2
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


async def test_a_committed_write_is_visible_to_the_next_read_and_counts_its_rows(store):
    async with store.transaction() as db:
        assert await add(db, 1, "one") == 1
        await db.executemany("INSERT INTO notes (n, body) VALUES (?, ?)", [(2, "two"), (3, "three")])
    assert await bodies(store) == ["one", "two", "three"]
    assert await store.execute("DELETE FROM notes WHERE body IN (?, ?)", ("one", "three")) == 2
    assert await store.execute("DELETE FROM notes WHERE body = ?", ("nobody",)) == 0
    assert await bodies(store) == ["two"]


async def test_placeholders_inside_quoted_text_stay_text(store):
    await add(store, 1, "what?")
    row = await store.fetchone("SELECT body, 'is it?' AS q FROM notes WHERE body = ? AND n = ?", ("what?", 1))
    assert (row["body"], row["q"], row[0]) == ("what?", "is it?", "what?")


async def test_rows_survive_reopening_and_close_is_idempotent(make_store):
    first = make_store()
    await first.open()
    await first.ensure_schema(SCHEMA)
    await add(first, 1, "kept")
    await first.close()
    await first.close()
    with pytest.raises(RuntimeError, match="store is not open"):
        await first.fetchall("SELECT 1")
    second = make_store()  # the next process
    await second.open()
    try:
        assert await bodies(second) == ["kept"]
    finally:
        await second.close()


async def test_a_keyed_lock_serialises_transactions_that_take_it(store):
    # Two writers each read the highest n and insert the next: without the lock on PostgreSQL
    # both would read the same n and one insert would fail on the primary key.
    await add(store, 0, "start")

    async def next_note(body: str) -> None:
        async with store.transaction() as db:
            await db.lock("notes")
            top = (await db.fetchone("SELECT MAX(n) FROM notes"))[0]
            await asyncio.sleep(0.05)
            await add(db, top + 1, body)

    await asyncio.gather(*(next_note(f"w{i}") for i in range(4)))
    assert sorted(await bodies(store)) == ["start", "w0", "w1", "w2", "w3"]


# --------------------------------------------------------------------------- SQLite only


async def test_the_sqlite_read_connection_refuses_writes(tmp_path: Path):
    store = SqliteStore(tmp_path / "kernel.sqlite3")
    await store.open()
    try:
        await store.ensure_schema(SCHEMA)
        # Writes must go through transaction(): a write on the read connection would skip the lock.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.fetchall("INSERT INTO notes (n, body) VALUES (1, 'sneaky')")
        assert await bodies(store) == []
        assert (await store.fetchone("PRAGMA journal_mode"))[0] == "wal"
    finally:
        await store.close()
