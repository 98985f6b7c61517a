"""Stored responses on the kernel's SQLite store: the :class:`StoredResponses` seam, kept.

* Chaining: ``previous_response_id`` replays the chain's input and output (the model's
  view, see :mod:`plugins.openresponses.item_views`), waiting a bounded time for a
  predecessor that is still running.
* Recording: a streamed or background response is written before its
  ``response.created`` goes out and then followed by a :class:`LiveResponse`; a plain
  JSON response (whose id nobody knows before it is answered) is written in one
  transaction before it is sent.
* Housekeeping: runs whose process stopped (its lease expired, kernel.store.leases)
  are marked failed, at start and by the housekeeping leader; the leader's retention
  sweep deletes expired responses; at stop, pending writes finish.
* Across processes (PostgreSQL): the record is in the database before the first byte
  (another process may be asked for it next), and a cancel for a run of this process
  may arrive from another one (the ``or_cancel`` notification).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel import ApiError, Item
from kernel.auth import DEFAULT_PRINCIPAL
from plugins.openresponses import remote
from plugins.openresponses.batching import EventWriter, RecordWriter
from plugins.openresponses.item_views import chain_items, find_in_link, model_input, wire_input_items
from plugins.openresponses.live import LiveRegistry, LiveResponse
from plugins.openresponses.replay import salvage_output
from plugins.openresponses.retention import Sweeper
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.storage import ResponseRecord, ResponseStore
from plugins.openresponses.storage.sql import CANCEL_CHANNEL
from plugins.openresponses.stored import StoredResponses
from plugins.openresponses.unstored import UnstoredIds

if TYPE_CHECKING:
    from kernel.runs import Run
    from kernel.store.leases import Leases
    from plugins.openresponses.builder import ResponseBuilder
    from plugins.openresponses.request import ParsedRequest

log = logging.getLogger("plugins.openresponses")

RESTART_MESSAGE = ("the server running this response stopped while it was in progress; nothing more will "
                   "come of it")
ACTIVE_STATUSES = ("queued", "in_progress")
# How long a finished response's last writes are waited for (at shutdown, after runs drained).
WRITE_WAIT_SECONDS = 5.0


def owner_of(principal: str | None) -> str:
    """The owner a request's responses belong to: its API key's name."""
    return principal or DEFAULT_PRINCIPAL


class PersistentResponses(StoredResponses):
    """Keeps responses in a :class:`ResponseStore` (SQLite under the state directory by default)."""

    persists = True
    supports_background = True

    def __init__(self, settings: OpenResponsesSettings, store: ResponseStore, leases: Leases | None = None) -> None:
        self.settings = settings
        self.store = store
        self.leases = leases
        self._unsubscribe: Callable[[], None] | None = None
        self.writer = RecordWriter(store)
        self.event_writer = EventWriter(store)
        self.unstored = UnstoredIds()
        self.live = LiveRegistry()
        self._sweeper: Sweeper | None = None
        # Plain JSON responses are written once complete (settle); dropped with their builder.
        self._deferred: weakref.WeakKeyDictionary[ResponseBuilder, ResponseRecord] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.store.open()
        failed = await self.fail_orphaned()
        if failed:
            log.warning("marked %d stored response(s) failed: the process running them stopped", failed)
        if self.leases is not None:
            self.leases.add_reaper("stored response(s)", self.fail_orphaned)
            self._unsubscribe = await self.store.store.subscribe(CANCEL_CHANNEL, self._on_cancel)
        retention = self.settings.retention_seconds
        if retention is not None:
            self._sweeper = Sweeper(self._sweep_if_leader, retention, self.settings.sweep_interval_seconds)
            self._sweeper.start()

    async def fail_orphaned(self) -> int:
        """Fail queued/in-progress responses whose process holds no lease (all of them without leases)."""
        orphaned = self.leases.orphaned("or_responses.instance_id") if self.leases is not None else None
        return await self.store.fail_interrupted(RESTART_MESSAGE, salvage_output, orphaned=orphaned)

    async def _sweep_if_leader(self, older_than: float) -> int:
        # Once across the cluster: only the housekeeping leader sweeps.
        if self.leases is not None and not await self.store.store.lead():
            return 0
        return await self.store.expire(older_than)

    def _on_cancel(self, response_id: str) -> None:
        """Another process was asked to cancel a background run: stop it if it runs here."""
        live = self.live.entry(response_id)
        if live is not None and live.background and live.run.cancel():
            log.info("response %s: cancelled at another process's request", response_id)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._sweeper is not None:
            await self._sweeper.stop()
        # Runs have drained (finished or cancelled): let their last writes land.
        pending = [asyncio.ensure_future(live.settled.wait()) for live in self.live.all()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=WRITE_WAIT_SECONDS)
            for waiter in late:
                waiter.cancel()
        await self.event_writer.close()
        await self.writer.close()

    async def sweep(self, now: float | None = None) -> int:
        """Delete responses older than the retention (what the periodic task does); returns the count."""
        retention = self.settings.retention_seconds
        if retention is None:
            return 0
        return await self.store.expire((time.time() if now is None else now) - retention)

    # ------------------------------------------------------------------ chaining

    async def previous_items(self, response_id: str, principal: str | None) -> list[Item]:
        owner = owner_of(principal)
        live = self.live.get(response_id, owner)
        if live is not None and not live.settled.is_set():
            # A finished response still being written is as good as stored: wait for the
            # write (quick) whatever chain_wait_seconds says; a running one waits that long.
            wait = WRITE_WAIT_SECONDS if live.builder.done else self.settings.chain_wait_seconds
            if wait > 0:
                log.info("previous_response_id %s is still %s; waiting up to %g s for it", response_id,
                         "being written" if live.builder.done else "running", wait)
            if not (wait > 0 and await live.wait_settled(wait)):
                raise _in_progress(response_id, wait)
        await self.writer.wait(response_id)
        links = await self.store.history(response_id, owner)
        if not links and (why := self.unstored.reason(response_id, owner)) is not None:
            raise ApiError(400, f"previous_response_id {response_id!r} cannot be chained: it was not stored ({why}); "
                           "send the conversation as input instead", param="previous_response_id",
                           code="previous_response_not_stored")
        if not links:
            raise ApiError(404, f"previous_response_id {response_id!r} was not found (it may have been created "
                           "with store: false, deleted or expired, or belong to another API key)",
                           param="previous_response_id",
                           code="previous_response_not_found")
        damaged = next((link for link in links if link.damaged), None)
        if damaged is not None:
            # Its history is gone: continuing would silently drop it from the model's view.
            raise ApiError(400, f"previous_response_id {response_id!r} cannot be chained: response {damaged.id!r} in "
                           f"its chain is damaged ({damaged.damaged}); send the conversation as input instead",
                           param="previous_response_id", code="previous_response_damaged")
        head = links[-1]
        if not head.stored:
            why = head.not_stored_reason or "it was created with store: false"
            raise ApiError(400, f"previous_response_id {response_id!r} cannot be chained: it was not stored ({why}); "
                           "send the conversation as input instead", param="previous_response_id",
                           code="previous_response_not_stored")
        if head.status in ACTIVE_STATUSES:
            # Running in another process (a shared database): wait for it as for our own.
            wait = self.settings.chain_wait_seconds if self.store.shared else 0
            if not (wait > 0 and await remote.wait_finished(self.store, response_id, owner, wait)):  # type: ignore[arg-type]
                raise _in_progress(response_id, wait)
            return await self.previous_items(response_id, principal)
        return chain_items(links)

    async def find_item(self, item_id: str, principal: str | None) -> Item | None:
        link = await self.store.find_item(item_id, owner_of(principal))
        return find_in_link(link, item_id) if link is not None else None

    # ------------------------------------------------------------------ recording

    async def track(self, builder: ResponseBuilder, run: Run | None, request: ParsedRequest,
                    input_items: list[Item], principal: str | None) -> None:
        owner = owner_of(principal)
        params = builder.params
        visible_early = request.stream or request.background  # the id is out with response.created
        record = ResponseRecord(
            id=builder.id, owner=owner, status="queued" if request.background else "in_progress",
            created_at=builder.created_at, previous_response_id=params.previous_response_id,
            background=request.background, stored=params.store, agent=run.agent.name if run is not None else "",
            instance_id=self.leases.instance_id if self.leases is not None else "",
        )
        if params.store:
            record.input_items = await self._wire_input(request.raw_input, owner)
            record.model_input = model_input(input_items, request.system_messages)
            self._check_input_size(record)
        if not visible_early:
            self._deferred[builder] = record
            return
        shared = self.store.shared  # other processes may be asked for this id next
        if not params.store:
            # A tombstone, so chaining onto it gets a clear 400; awaited only when another
            # process may be asked (it cannot wait on this one's writer).
            tombstone = self.writer.submit(record, deferrable=not shared)
            if shared:
                await tombstone
            return
        if run is None:
            raise ValueError("a streamed or background response needs its run to be followed")
        builder.record_events = True
        record.resource = {**builder.resource(), "status": record.status}
        # Not awaited on SQLite: the live entry answers reads until the record is in (see
        # LiveResponse). On a shared database another process may be asked for the id as soon
        # as response.created is out, and only the database can answer it there: in first.
        recorded = self.writer.submit(record)
        if shared:
            recorded = _done(await recorded)
        live = LiveResponse(builder, run, owner=owner, background=request.background, store=self.store,
                            events=self.event_writer,
                            max_bytes=self.settings.max_stored_bytes, recorded=recorded,
                            on_settled=self.live.forget)
        self.live.add(live)
        live.listen()

    async def settle(self, builder: ResponseBuilder) -> None:
        record = self._deferred.pop(builder, None)
        if record is None:
            live = self.live.entry(builder.id)
            if live is not None:
                await live.wait_settled(WRITE_WAIT_SECONDS)
            return
        if not record.stored:
            self.unstored.add(record.id, record.owner)  # remembered, not written (see unstored.py)
            return
        resource = builder.resource()
        record.status, record.resource, record.output_items = builder.status, resource, resource["output"]
        written = await self.writer.submit(record)
        if written > self.settings.max_stored_bytes:
            reason = (f"it is {written} bytes, over [plugins.openresponses] max_stored_bytes = "
                      f"{self.settings.max_stored_bytes}; it was answered but not kept")
            log.warning("response %s: %s", record.id, reason)
            await self.store.discard(record.id, reason)

    async def written(self, response_id: str) -> None:
        """Return once a record queued for ``response_id`` (if any) is in the store."""
        await self.writer.wait(response_id)

    async def _wire_input(self, raw_input: object, owner: str) -> list[dict[str, Any]]:
        """The input as listable items, each ``item_reference`` replaced by the item it names.

        Listings show what the model was given (as OpenAI's do, and the spec's item
        union has no reference type); resolution already succeeded, so each is found.
        """
        items = wire_input_items(raw_input)
        for index, item in enumerate(items):
            if item.get("type") != "item_reference":
                continue
            ref = str(item.get("id"))
            earlier = next((i for i in items[:index] if i.get("id") == ref and i.get("type") != "item_reference"),
                           None)
            found = earlier or await self._stored_wire_item(ref, owner)
            if found is not None:
                items[index] = found
        return items

    async def _stored_wire_item(self, item_id: str, owner: str) -> dict[str, Any] | None:
        link = await self.store.find_item(item_id, owner)
        if link is None:
            return None
        output = next((out for out in link.output_items if out.get("id") == item_id), None)
        return output if output is not None else await self.store.input_item(link.id, item_id)

    def _check_input_size(self, record: ResponseRecord) -> None:
        size = len(json.dumps(record.input_items, ensure_ascii=False)) + len(
            json.dumps(record.model_input, ensure_ascii=False))
        limit = self.settings.max_stored_bytes
        if size > limit:
            raise ApiError(400, f"this response's input takes {size} bytes to store, over the server's limit of "
                           f"{limit} bytes per stored response; send store: false, or a smaller input",
                           param="input", code="response_too_large_to_store")


async def _done(value: int) -> int:
    return value


def _in_progress(response_id: str, waited: float) -> ApiError:
    how = f" after waiting {waited:g} s" if waited else ""
    return ApiError(409, f"previous_response_id {response_id!r} is still in progress{how}; chain onto it once it "
                    "has finished (poll GET /v1/responses/{id})", param="previous_response_id",
                    code="previous_response_in_progress")
