"""EventWriter's group commit on a real store: live responses' events share transactions, in order."""

from __future__ import annotations

import asyncio
import time

import pytest

from kernel.store import Store
from plugins.openresponses.batching import EventWriter
from plugins.openresponses.storage import ResponseRecord, SqlResponseStore, StoredEvent

NEVER = 3600.0  # a hold no test may wait out: only urgency or a full batch ends it
GUARD = 30.0  # a hang guard, not a timing assertion


class CountingStore(SqlResponseStore):
    """The real store, remembering which responses each event transaction carried."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[list[str]] = []

    async def append_events_many(self, logs: list[tuple[str, list[StoredEvent]]]) -> list[int]:
        self.batches.append([response_id for response_id, _ in logs])
        return await super().append_events_many(logs)


@pytest.fixture
async def responses(open_response_store):
    async with open_response_store(CountingStore) as rs:
        for rid in ("resp_a", "resp_b", "resp_c"):
            await rs.create(ResponseRecord(id=rid, owner="default", status="in_progress", created_at=time.time(),
                                           resource={"id": rid, "status": "in_progress"}))
        yield rs


def events(start: int, count: int) -> list[StoredEvent]:
    return [StoredEvent(n, {"type": "response.output_text.delta", "sequence_number": n, "delta": f"t{n}"})
            for n in range(start, start + count)]


async def test_appends_of_several_responses_share_one_transaction(responses):
    writer = EventWriter(responses, coalesce_seconds=NEVER)
    waiting = [asyncio.ensure_future(writer.append(rid, events(0, 3))) for rid in ("resp_a", "resp_b")]
    await asyncio.sleep(0.05)
    assert responses.batches == [] and not any(w.done() for w in waiting)  # holding for company
    # A complete response's last events end the hold for everyone queued.
    last = await asyncio.wait_for(writer.append("resp_c", events(0, 2), urgent=True), GUARD)
    sizes = await asyncio.wait_for(asyncio.gather(*waiting), GUARD)
    assert responses.batches == [["resp_a", "resp_b", "resp_c"]]
    assert last > 0 and all(size > 0 for size in sizes)
    assert [e.sequence_number for e in await responses.events_after("resp_b", -1)] == [0, 1, 2]


async def test_a_response_log_stays_in_order_across_transactions(responses):
    writer = EventWriter(responses, coalesce_seconds=0.01)
    for start in range(0, 30, 5):  # one writer per response: each append awaited before the next
        await asyncio.wait_for(writer.append("resp_a", events(start, 5)), GUARD)
    stored = await responses.events_after("resp_a", -1)
    assert [e.sequence_number for e in stored] == list(range(30))
    assert len(responses.batches) == 6


async def test_a_failed_transaction_fails_every_append_in_it(responses):
    writer = EventWriter(responses, coalesce_seconds=NEVER)

    async def broken(logs):
        raise OSError("disk full")

    responses.append_events_many = broken  # type: ignore[method-assign]
    first = asyncio.ensure_future(writer.append("resp_a", events(0, 1)))
    second = asyncio.ensure_future(writer.append("resp_b", events(0, 1), urgent=True))
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), GUARD)
    assert all(isinstance(r, OSError) for r in results)
    del responses.append_events_many  # the store recovers: the writer goes on
    assert await asyncio.wait_for(writer.append("resp_c", events(0, 1), urgent=True), GUARD) > 0


async def test_close_writes_what_is_queued(responses):
    writer = EventWriter(responses, coalesce_seconds=NEVER)
    pending = asyncio.ensure_future(writer.append("resp_a", events(0, 4)))
    await asyncio.sleep(0)
    await asyncio.wait_for(writer.close(), GUARD)
    assert await pending > 0 and len(await responses.events_after("resp_a", -1)) == 4
