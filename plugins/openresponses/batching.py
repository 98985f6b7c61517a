"""Group commit for new response records and for streamed responses' event logs.

Under load many responses finish at once; writing each in its own transaction makes
every request pay a commit. :class:`RecordWriter` queues new records and writes
whatever has queued in one transaction, while the previous batch commits. Callers
that need the row (a stored response answered to its client) await their future;
``store: false`` tombstones are not awaited at all, and readers of an id call
:meth:`RecordWriter.wait` first, so nobody ever sees a record that is still queued
as missing. :class:`EventWriter` does the same for the event logs of live streamed
responses.

A transaction costs far more than a row (a commit, and the hops to SQLite's thread),
so a queue of nothing urgent (tombstones nobody waits for, events of responses still
running) is held for up to :data:`COALESCE_SECONDS` to gather more into the same
transaction. Anything that needs the queue written (a record that is awaited, a
reader's :meth:`RecordWriter.wait`, a response's last events, ``close``, or a full
batch) ends the hold at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

from plugins.openresponses.storage import ResponseRecord, ResponseStore, StoredEvent

log = logging.getLogger("plugins.openresponses")

# How long a queue of nothing urgent may wait for company before it is written.
COALESCE_SECONDS = 0.05
# A queue this long is written at once (bounds memory and transaction size).
COALESCE_MAX_RECORDS = 256

Item = TypeVar("Item")


class _GroupCommit(Generic[Item]):
    """Queued items written in shared transactions, in submission order (see the module)."""

    task_name = "openresponses-writer"

    def __init__(self, store: ResponseStore, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self._store = store
        self._coalesce_seconds = coalesce_seconds
        self._queue: list[tuple[Item, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._urgent = False  # something queued must be written without holding
        self._write_now: asyncio.Event | None = None  # set to end a hold

    def _enqueue(self, item: Item, *, urgent: bool) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.append((item, future))
        if urgent or len(self._queue) >= COALESCE_MAX_RECORDS:
            self._flush_soon()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name=self.task_name)
        return future

    async def close(self) -> None:
        """Write everything queued."""
        if self._task is not None:
            self._flush_soon()
            await asyncio.wait([self._task])

    def _flush_soon(self) -> None:
        self._urgent = True
        if self._write_now is not None:
            self._write_now.set()

    async def _hold_for_company(self) -> None:
        """Wait up to the coalescing window, or until something needs the queue written."""
        if self._urgent or self._coalesce_seconds <= 0:
            return
        self._write_now = asyncio.Event()
        try:
            await asyncio.wait_for(self._write_now.wait(), self._coalesce_seconds)
        except TimeoutError:
            pass
        finally:
            self._write_now = None

    async def _drain(self) -> None:
        await self._hold_for_company()
        while self._queue:
            batch, self._queue = self._queue, []
            self._urgent = False
            try:
                sizes = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), size in zip(batch, sizes, strict=True):
                    if not future.done():
                        future.set_result(size)
            finally:
                self._written(batch)
            if self._queue:
                await self._hold_for_company()

    async def _write(self, items: list[Item]) -> list[int]:
        """Write ``items`` in one transaction; the bytes each took."""
        raise NotImplementedError

    def _written(self, batch: list[tuple[Item, asyncio.Future[int]]]) -> None:
        """Called after each batch, written or not."""


class RecordWriter(_GroupCommit[ResponseRecord]):
    """Inserts :class:`ResponseRecord` values in shared transactions, in submission order."""

    task_name = "openresponses-records"

    def __init__(self, store: ResponseStore, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        super().__init__(store, coalesce_seconds)
        self._pending: dict[str, asyncio.Future[int]] = {}

    def submit(self, record: ResponseRecord, *, deferrable: bool = False) -> asyncio.Future[int]:
        """Queue ``record``; the future gives the bytes it took once committed.

        ``deferrable`` says nobody awaits the future, so the record may wait briefly to
        share a transaction with later ones (readers of its id still never miss it).
        """
        future = self._enqueue(record, urgent=not deferrable)
        future.add_done_callback(_log_failure)
        self._pending[record.id] = future
        return future

    async def wait(self, response_id: str) -> None:
        """Return once ``response_id`` is not waiting to be written (at once if it never was)."""
        future = self._pending.get(response_id)
        if future is not None:
            self._flush_soon()
            await asyncio.wait([future])

    async def _write(self, items: list[ResponseRecord]) -> list[int]:
        return await self._store.create_many(items)

    def _written(self, batch: list[tuple[ResponseRecord, asyncio.Future[int]]]) -> None:
        for record, future in batch:
            if self._pending.get(record.id) is future:
                del self._pending[record.id]


class EventWriter(_GroupCommit[tuple[str, list[StoredEvent]]]):
    """Appends the event logs of live streamed responses in shared transactions.

    Each live response used to gather its events for a moment and then write them in a
    transaction of its own: a thousand slow streams (a token every 50 ms each) made
    thousands of small transactions a second, each with a hop to SQLite's thread, and
    ``store: true`` cost half again the CPU per token of ``store: false``. Each response
    awaits its append before queueing the next, so its log stays in order.
    """

    task_name = "openresponses-events"

    async def append(self, response_id: str, events: list[StoredEvent], *, urgent: bool = False) -> int:
        """Queue ``events`` for ``response_id``'s log; the bytes they took once committed.
        ``urgent``: the response is complete (a client waits for ``[DONE]``), write now."""
        return await self._enqueue((response_id, events), urgent=urgent)

    async def _write(self, items: list[tuple[str, list[StoredEvent]]]) -> list[int]:
        return await self._store.append_events_many(items)


def _log_failure(future: asyncio.Future[int]) -> None:
    # Tombstones are never awaited: their failures are logged here rather than lost.
    if not future.cancelled() and future.exception() is not None:
        log.error("could not store a response record: %s", future.exception())
