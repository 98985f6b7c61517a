"""Group commit for new response records.

Under load many responses finish at once; writing each in its own transaction makes
every request pay a commit. :class:`RecordWriter` queues new records and writes
whatever has queued in one transaction, while the previous batch commits. Callers
that need the row (a stored response answered to its client) await their future;
``store: false`` tombstones are not awaited at all, and readers of an id call
:meth:`RecordWriter.wait` first, so nobody ever sees a record that is still queued
as missing.
"""

from __future__ import annotations

import asyncio
import logging

from plugins.openresponses.storage import ResponseRecord, ResponseStore

log = logging.getLogger("plugins.openresponses")


class RecordWriter:
    """Inserts :class:`ResponseRecord` values in shared transactions, in submission order."""

    def __init__(self, store: ResponseStore) -> None:
        self._store = store
        self._queue: list[tuple[ResponseRecord, asyncio.Future[int]]] = []
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: ResponseRecord) -> asyncio.Future[int]:
        """Queue ``record``; the future gives the bytes it took once committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.append((record, future))
        self._pending[record.id] = future
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="openresponses-records")
        return future

    async def wait(self, response_id: str) -> None:
        """Return once ``response_id`` is not waiting to be written (at once if it never was)."""
        future = self._pending.get(response_id)
        if future is not None:
            await asyncio.wait([future])

    async def close(self) -> None:
        """Write everything queued."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
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


def _log_failure(future: asyncio.Future[int]) -> None:
    # Tombstones are never awaited: their failures are logged here rather than lost.
    if not future.cancelled() and future.exception() is not None:
        log.error("could not store a response record: %s", future.exception())
