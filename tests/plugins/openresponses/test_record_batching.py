"""RecordWriter's group commit on a real SQLite file: tombstones share transactions, awaited records never wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from kernel.store import Store
from plugins.openresponses.batching import RecordWriter
from plugins.openresponses.storage import ResponseRecord, SqlResponseStore

# Far longer than any test may take: a record that waited for the window would hang the test.
NEVER = 3600.0
GUARD = 30.0  # a hang guard, not a timing assertion


class CountingStore(SqlResponseStore):
    """The real store, remembering the ids of each transaction's records."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[list[str]] = []

    async def create_many(self, records: list[ResponseRecord]) -> list[int]:
        self.batches.append([record.id for record in records])
        return await super().create_many(records)


@pytest.fixture
async def responses(open_response_store):
    async with open_response_store(CountingStore) as rs:
        yield rs
def tombstone(rid: str) -> ResponseRecord:
    return ResponseRecord(id=rid, owner="default", status="in_progress", created_at=time.time(), stored=False)


def stored(rid: str) -> ResponseRecord:
    return ResponseRecord(id=rid, owner="default", status="completed", created_at=time.time(),
                          resource={"id": rid, "status": "completed"})


async def test_tombstones_wait_for_company_and_a_reader_writes_them_at_once(responses):
    writer = RecordWriter(responses, coalesce_seconds=NEVER)
    for i in range(5):
        writer.submit(tombstone(f"resp_t{i}"), deferrable=True)
    await asyncio.sleep(0)  # the writer task starts and holds
    assert responses.batches == []
    await asyncio.wait_for(writer.wait("resp_t3"), GUARD)
    assert responses.batches == [[f"resp_t{i}" for i in range(5)]]
    assert (await responses.get("resp_t3", "default")).stored is False


async def test_an_awaited_record_is_written_at_once_with_the_tombstones_before_it(responses):
    writer = RecordWriter(responses, coalesce_seconds=NEVER)
    writer.submit(tombstone("resp_a"), deferrable=True)
    await asyncio.sleep(0)
    written = await asyncio.wait_for(writer.submit(stored("resp_b")), GUARD)
    assert written > 0
    assert responses.batches == [["resp_a", "resp_b"]]


async def test_close_writes_held_tombstones(responses):
    writer = RecordWriter(responses, coalesce_seconds=NEVER)
    writer.submit(tombstone("resp_c"), deferrable=True)
    await asyncio.wait_for(writer.close(), GUARD)
    assert responses.batches == [["resp_c"]]
    assert await responses.get("resp_c", "default") is not None


async def test_tombstones_are_written_after_the_window_without_any_reader(responses):
    writer = RecordWriter(responses, coalesce_seconds=0.01)
    future = writer.submit(tombstone("resp_d"), deferrable=True)
    assert await asyncio.wait_for(future, GUARD) > 0
    assert responses.batches == [["resp_d"]]
