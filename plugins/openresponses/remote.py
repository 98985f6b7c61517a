"""Responses running in another process (several processes on one PostgreSQL database).

The rows are the truth: the running process writes a response's events (in small
batches) and then its final state, and each of those transactions notifies the
``or_events`` channel with the response's id (PostgreSQL ``NOTIFY``, delivered only
on commit). A reader here subscribes *before* reading, so nothing committed after
its read can go unnoticed; each notification makes it read the rows after the last
sequence number it sent, so an event is never sent twice or skipped. A re-read every
:data:`SAFETY_READ_SECONDS` covers a notification lost with a dropped connection:
it is the fallback, not the mechanism.

A cancel is a notification too (``or_cancel``): the process running the response
cancels its run, and the run's final state arrives here like any other write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from plugins.openresponses.builder import TERMINAL_EVENTS, Event
from plugins.openresponses.replay import close_interrupted, salvage_output
from plugins.openresponses.storage import ResponseRecord
from plugins.openresponses.storage.sql import CANCEL_CHANNEL, CHANNEL, SqlResponseStore

log = logging.getLogger("plugins.openresponses")

ACTIVE = ("queued", "in_progress")
# Without any notification, a follower still re-reads this often (a lost notification).
SAFETY_READ_SECONDS = 5.0


class Watch:
    """Notifications for one response id: :meth:`wait` returns when one arrived (or timed out)."""

    def __init__(self, responses: SqlResponseStore, response_id: str) -> None:
        self._responses = responses
        self._id = response_id
        self._event = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None

    async def __aenter__(self) -> Watch:
        self._unsubscribe = await self._responses.store.subscribe(CHANNEL, self._on_notice)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_notice(self, payload: str) -> None:
        if payload == self._id:
            self._event.set()

    async def wait(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            pass
        self._event.clear()


async def follow(responses: SqlResponseStore, record: ResponseRecord, after: int) -> AsyncIterator[Event]:
    """The response's events after ``after``, as its process writes them, until it ends."""
    last = after
    async with Watch(responses, record.id) as watch:
        while True:
            events = await responses.events_after(record.id, last)
            for stored in events:
                yield stored.data
                last = stored.sequence_number
                if stored.data["type"] in TERMINAL_EVENTS:
                    return
            if not events:
                current = await responses.get(record.id, record.owner)
                if current is None or not current.stored:
                    return  # deleted, or its writer gave up (a tombstone): nothing more will come
                if current.status not in ACTIVE:
                    # Ended with its log cut short (its process stopped and a survivor failed it).
                    logged = [e.data for e in await responses.events_after(record.id, -1)]
                    for event in close_interrupted(logged, current.resource):
                        if event["sequence_number"] > last:
                            yield event
                    return
            await watch.wait(SAFETY_READ_SECONDS)


async def current(responses: SqlResponseStore, record: ResponseRecord) -> dict[str, Any]:
    """The resource of a response another process runs, as far as its event log has got
    (its record's resource is as it was created; the log runs a batch behind the stream)."""
    logged = [e.data for e in await responses.events_after(record.id, -1)]
    if not logged:
        return record.resource
    snapshot = next((e["response"] for e in reversed(logged) if isinstance(e.get("response"), dict)),
                    record.resource)
    return {**snapshot, "output": salvage_output(logged, unfinished="in_progress")}


async def cancel(responses: SqlResponseStore, record: ResponseRecord, settle_seconds: float) -> ResponseRecord:
    """Ask the process running ``record`` to cancel it; the record once it left the active
    statuses, or as it stands after ``settle_seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_seconds
    async with Watch(responses, record.id) as watch:
        await responses.store.notify(CANCEL_CHANNEL, record.id)
        while True:
            current = await responses.get(record.id, record.owner)
            if current is None or current.status not in ACTIVE:
                return current or record
            left = deadline - loop.time()
            if left <= 0:
                return current
            await watch.wait(min(left, SAFETY_READ_SECONDS))


async def wait_finished(responses: SqlResponseStore, response_id: str, owner: str, seconds: float) -> bool:
    """Wait up to ``seconds`` for a response another process runs to leave the active
    statuses (chaining onto it waits like onto one of this process's); True once it has."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with Watch(responses, response_id) as watch:
        while True:
            current = await responses.get(response_id, owner)
            if current is None or current.status not in ACTIVE:
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await watch.wait(min(left, SAFETY_READ_SECONDS))
