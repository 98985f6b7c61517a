"""Stored responses whose run is still going in this process, and their event-log writer.

(Runs in *other* processes sharing a PostgreSQL store are read from their rows:
:mod:`plugins.openresponses.remote`.)

While a response runs, its :class:`ResponseBuilder` is the truth: reads, resumed
streams and cancels use it directly, so nothing waits on the database. A
:class:`LiveResponse` writes the builder's events to the store in batches (one
writer task, so writes keep their order; the batches of all live responses share
transactions through an :class:`~plugins.openresponses.batching.EventWriter`), then the
final resource, and only then leaves the registry: whoever misses it there finds
everything in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from plugins.openresponses.batching import EventWriter
from plugins.openresponses.builder import Event, ResponseBuilder
from plugins.openresponses.storage import ResponseStore, StoredEvent
from plugins.openresponses.stream import EventFollower

if TYPE_CHECKING:
    from kernel.runs import Run

log = logging.getLogger("plugins.openresponses")


class LiveResponse:
    """One running stored response: its builder, run, owner, and the writer persisting it."""

    def __init__(self, builder: ResponseBuilder, run: Run, *, owner: str, background: bool,
                 store: ResponseStore, events: EventWriter, max_bytes: int, recorded: Awaitable[int],
                 on_settled: Callable[[LiveResponse], None]) -> None:
        self.builder = builder
        self.run = run
        self.owner = owner
        self.background = background
        self.settled = asyncio.Event()  # set once the final resource is in the store
        self._store = store
        self._events = events  # shared by every live response: their events share transactions
        self._max_bytes = max_bytes
        # The record's insert, still committing when the stream starts on SQLite: its first
        # byte must not wait for the database. Readers of the id find this live entry (or wait
        # for the insert); the event log's rows, which need the record, are written after it.
        # On PostgreSQL it has already committed (other processes cannot see this entry).
        self._recorded = recorded
        self._bytes = 0
        self._pending: list[Event] = []
        self._wakeup = asyncio.Event()
        self._follower: EventFollower | None = None
        self._on_settled = on_settled
        self._task: asyncio.Task[None] | None = None
        self.discarded = False

    @property
    def id(self) -> str:
        return self.builder.id

    @property
    def follower(self) -> EventFollower:
        """One follower for every reader of this response (it listens to the builder once)."""
        if self._follower is None:
            self._follower = EventFollower(self.builder)
        return self._follower

    def listen(self) -> None:
        """Start persisting: every event from now on (and the builder's earlier ones) is written."""
        self._pending.extend(self.builder.events)
        if not self.builder.done:  # a done builder has all its events and lets go of listeners
            self.builder.listeners.append(self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._write(), name=f"store-{self.id}")
        self._wakeup.set()

    def _on_event(self, event: Event) -> None:
        self._pending.append(event)
        self._wakeup.set()

    async def _write(self) -> None:
        try:
            self._bytes = await self._recorded
            await self._check_size()
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                batch, self._pending = self._pending, []
                if batch and not self.discarded:
                    stored = [StoredEvent(e["sequence_number"], e) for e in batch]
                    # Shared with every other live response's events (one transaction per
                    # moment); events arriving meanwhile gather in _pending for the next.
                    self._bytes += await self._events.append(self.id, stored, urgent=self.builder.done)
                    await self._check_size()
                if self.builder.done and not self._pending:
                    break
            if not self.discarded:
                resource = self.builder.resource()
                self._bytes += await self._store.update(self.id, status=self.builder.status, resource=resource,
                                                        output_items=resource["output"])
                await self._check_size()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The run goes on for its client, but its record must not stay in_progress with a
            # partial log: make it a tombstone saying why (reads 404, chains 400, both explain).
            log.exception("response %s: could not be stored", self.id)
            await self._give_up(f"storing it failed ({type(exc).__name__}: {exc}); it was answered but not kept")
        finally:
            self.settled.set()
            self._on_settled(self)

    async def _check_size(self) -> None:
        if self._bytes <= self._max_bytes or self.discarded:
            return
        self.discarded = True
        reason = (f"it grew past [plugins.openresponses] max_stored_bytes = {self._max_bytes} bytes "
                  "while it ran; it was answered but not kept")
        log.warning("response %s: %s", self.id, reason)
        await self._store.discard(self.id, reason)

    async def _give_up(self, reason: str) -> None:
        self.discarded = True
        try:
            await self._store.discard(self.id, reason)
        except Exception:  # the database itself is failing: the next start marks the record failed
            log.exception("response %s: could not mark it as not kept either", self.id)

    async def wait_settled(self, seconds: float | None) -> bool:
        """Wait until the response is fully stored; False if ``seconds`` passed first."""
        try:
            async with asyncio.timeout(seconds):
                await self.settled.wait()
        except TimeoutError:
            return False
        return True


class LiveRegistry:
    """Live responses by id, for this process."""

    def __init__(self) -> None:
        self._by_id: dict[str, LiveResponse] = {}

    def add(self, live: LiveResponse) -> None:
        self._by_id[live.id] = live

    def get(self, response_id: str, owner: str) -> LiveResponse | None:
        """The live response if it exists and belongs to ``owner``."""
        live = self._by_id.get(response_id)
        return live if live is not None and live.owner == owner else None

    def entry(self, response_id: str) -> LiveResponse | None:
        """The live response whoever owns it (for the store itself, never for a caller)."""
        return self._by_id.get(response_id)

    def forget(self, live: LiveResponse) -> None:
        if self._by_id.get(live.id) is live:
            del self._by_id[live.id]

    def all(self) -> list[LiveResponse]:
        return list(self._by_id.values())
