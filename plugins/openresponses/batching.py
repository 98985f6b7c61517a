"""Group commit for new response records.

Under load many responses finish at once; writing each in its own transaction makes
every request pay a commit. :class:`RecordWriter` queues new records and writes
whatever has queued in one transaction, while the previous batch commits. Callers
that need the row (a stored response answered to its client) await their future;
``store: false`` tombstones are not awaited at all, and readers of an id call
:meth:`RecordWriter.wait` first, so nobody ever sees a record that is still queued
as missing.

A transaction costs far more than a row (a commit, and the hops to SQLite's thread),
so a queue of nothing but tombstones, which nobody is waiting for, is held for up to
:data:`COALESCE_SECONDS` to gather more of them into the same transaction. Anything
that needs the queue written (a record that is awaited, a reader's :meth:`wait`,
:meth:`close`, or a full batch) ends the hold at once.
"""

from __future__ import annotations

import asyncio
import logging

from plugins.openresponses.storage import ResponseRecord, ResponseStore

log = logging.getLogger("plugins.openresponses")

# How long deferrable records (tombstones) may wait for company before they are written.
COALESCE_SECONDS = 0.05
# A deferred batch this large is written at once (bounds memory and transaction size).
COALESCE_MAX_RECORDS = 256


class RecordWriter:
    """Inserts :class:`ResponseRecord` values in shared transactions, in submission order."""

    def __init__(self, store: ResponseStore, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self._store = store
        self._coalesce_seconds = coalesce_seconds
        self._queue: list[tuple[ResponseRecord, asyncio.Future[int]]] = []
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._deferrable_only = True  # nothing queued needs writing at once
        self._write_now: asyncio.Event | None = None  # set to end a coalescing hold

    def submit(self, record: ResponseRecord, *, deferrable: bool = False) -> asyncio.Future[int]:
        """Queue ``record``; the future gives the bytes it took once committed.

        ``deferrable`` says nobody awaits the future, so the record may wait briefly to
        share a transaction with later ones (readers of its id still never miss it).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        future.add_done_callback(_log_failure)
        self._queue.append((record, future))
        self._pending[record.id] = future
        if not deferrable or len(self._queue) >= COALESCE_MAX_RECORDS:
            self._flush_soon()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="openresponses-records")
        return future

    async def wait(self, response_id: str) -> None:
        """Return once ``response_id`` is not waiting to be written (at once if it never was)."""
        future = self._pending.get(response_id)
        if future is not None:
            self._flush_soon()
            await asyncio.wait([future])

    async def close(self) -> None:
        """Write everything queued."""
        if self._task is not None:
            self._flush_soon()
            await asyncio.wait([self._task])

    def _flush_soon(self) -> None:
        self._deferrable_only = False
        if self._write_now is not None:
            self._write_now.set()

    async def _hold_for_company(self) -> None:
        """Wait up to the coalescing window, or until something needs the queue written."""
        if not self._deferrable_only or self._coalesce_seconds <= 0:
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
            self._deferrable_only = True
            try:
                sizes = await self._store.create_many([record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), size in zip(batch, sizes, strict=True):
                    if not future.done():
                        future.set_result(size)
            finally:
                for record, future in batch:
                    if self._pending.get(record.id) is future:
                        del self._pending[record.id]
            if self._queue:
                await self._hold_for_company()


def _log_failure(future: asyncio.Future[int]) -> None:
    # Tombstones are never awaited: their failures are logged here rather than lost.
    if not future.cancelled() and future.exception() is not None:
        log.error("could not store a response record: %s", future.exception())
