"""``GET``/``DELETE /v1/responses/{id}``, ``GET .../input_items``, ``POST .../cancel``.

OpenAI-compatible extras beyond the OpenResponses spec. Every lookup is scoped to the
caller's API key: another key's response answers 404 exactly like a missing one.
A response still running in this process is served from its live builder; a
finished one from the store; one running in another process (PostgreSQL) from the
store as that process writes it (:mod:`plugins.openresponses.remote`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response, g, request

from kernel import ApiError
from kernel.streaming import sse_response
from plugins.openresponses import remote
from plugins.openresponses.builder import TERMINAL_EVENTS, Event
from plugins.openresponses.live import LiveResponse
from plugins.openresponses.persistent import ACTIVE_STATUSES, WRITE_WAIT_SECONDS, PersistentResponses, owner_of
from plugins.openresponses.query import bool_arg, int_arg, json_response, page_query, response_not_found
from plugins.openresponses.replay import close_interrupted, events_from_resource
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.storage import ResponseRecord
from plugins.openresponses.stream import DONE_CHUNK, encode_event, sse_chunks

# How long a cancel waits for the cancelled run's final state to be stored.
CANCEL_SETTLE_SECONDS = 10.0


class Retrieval:
    """The views' logic over a :class:`PersistentResponses`."""

    def __init__(self, stored: PersistentResponses, settings: OpenResponsesSettings) -> None:
        self.stored = stored
        self.store = stored.store
        self.settings = settings

    # ------------------------------------------------------------------ GET /v1/responses/{id}

    async def retrieve(self, response_id: str) -> Response:
        """The stored ``ResponseResource``; with ``?stream=true`` its events, then live ones."""
        stream = bool_arg(request.args, "stream")
        after = int_arg(request.args, "starting_after", default=-1, low=0, high=None)
        if after != -1 and not stream:
            raise ApiError(400, "starting_after only applies to streamed retrieval; add stream=true",
                           param="starting_after", code="invalid_value")
        live = self._live(response_id)
        if live is not None:
            if stream:
                # A reader leaving must not stop the run: no on_disconnect here.
                return sse_response(sse_chunks(live.follower, after), keepalive=self.settings.keepalive_seconds)
            return json_response(live.builder.resource())
        record = await self._record(response_id)
        if stream and record.status in ACTIVE_STATUSES and self.store.shared:
            return sse_response(self._follow(record, after), keepalive=self.settings.keepalive_seconds)
        if stream:
            return sse_response(self._replay(record, after), keepalive=self.settings.keepalive_seconds)
        if record.status in ACTIVE_STATUSES and self.store.shared:
            return json_response(await remote.current(self.store, record))  # running in another process
        return json_response(record.resource)

    async def _follow(self, record: ResponseRecord, after: int) -> AsyncIterator[bytes]:
        async for event in remote.follow(self.store, record, after):
            yield encode_event(event)
        yield DONE_CHUNK

    async def _replay(self, record: ResponseRecord, after: int) -> AsyncIterator[bytes]:
        events = await self.replay_events(record)
        for event in events:
            if event["sequence_number"] > after:
                yield encode_event(event)
        yield DONE_CHUNK

    async def replay_events(self, record: ResponseRecord) -> list[Event]:
        """A stored response's events: its log, completed from the resource where it is cut short."""
        logged = [e.data for e in await self.store.events_after(record.id, -1)]
        if not logged:
            return events_from_resource(record.resource)  # a plain JSON response kept no log
        if logged[-1]["type"] not in TERMINAL_EVENTS and record.status not in ACTIVE_STATUSES:
            logged += close_interrupted(logged, record.resource)  # a restart cut the run short
        return logged

    # ------------------------------------------------------------------ DELETE /v1/responses/{id}

    async def delete(self, response_id: str) -> Response:
        live = self._live(response_id)
        if live is not None and live.builder.done:
            # Finished, its last writes still landing: GET already shows it final, so a
            # delete must not answer "in progress"; wait the moment it takes.
            await live.wait_settled(WRITE_WAIT_SECONDS)
        elif live is not None:
            raise _still_running(response_id)
        record = await self._record(response_id)
        if live is None and record.status in ACTIVE_STATUSES and self.store.shared:
            raise _still_running(response_id)  # in another process
        if not await self.store.delete(response_id, owner_of(g.principal)):
            raise response_not_found(response_id)
        if live is not None:
            live.discarded = True  # a write still landing must not make it readable again
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    # ------------------------------------------------------------------ POST /v1/responses/{id}/cancel

    async def cancel(self, response_id: str) -> Response:
        live = self._live(response_id)
        if live is None:
            record = await self._record(response_id)
            if record.status in ACTIVE_STATUSES and self.store.shared:
                return await self._cancel_elsewhere(record)
            raise _not_cancellable(response_id, record.status)
        if not live.background:
            raise _not_background(response_id)
        stopped = live.run.cancel()
        await live.wait_settled(CANCEL_SETTLE_SECONDS)
        if not stopped:
            raise _not_cancellable(response_id, live.builder.status)
        return json_response(live.builder.resource())

    async def _cancel_elsewhere(self, record: ResponseRecord) -> Response:
        """Cancel a run another process executes (it hears the request and stops it)."""
        if not record.background:
            raise _not_background(record.id)
        final = await remote.cancel(self.store, record, CANCEL_SETTLE_SECONDS)
        if final.status != "cancelled":
            raise _not_cancellable(record.id, final.status)
        return json_response(final.resource)

    # ------------------------------------------------------------------ GET /v1/responses/{id}/input_items

    async def input_items(self, response_id: str) -> Response:
        query = page_query(request.args)
        await self.stored.written(response_id)
        page = await self.store.input_items(response_id, owner_of(g.principal), limit=query.limit,
                                            order=query.order, after=query.after)
        if page is None:
            await self._record(response_id)  # raises the precise 404
            raise response_not_found(response_id)
        return json_response(page.as_list())

    # ------------------------------------------------------------------ helpers

    def _live(self, response_id: str) -> LiveResponse | None:
        live = self.stored.live.get(response_id, owner_of(g.principal))
        return live if live is not None and not live.discarded else None

    async def _record(self, response_id: str) -> ResponseRecord:
        """The caller's stored response, or the 404 that says why there is none."""
        await self.stored.written(response_id)
        record = await self.store.get(response_id, owner_of(g.principal))
        unstored = getattr(self.stored, "unstored", None)
        if record is None and unstored is not None and (why := unstored.reason(response_id, owner_of(g.principal))):
            raise ApiError(404, f"response {response_id!r} was not stored: {why}", param="response_id",
                           code="response_not_found")
        if record is None:
            raise response_not_found(response_id)
        if not record.stored:
            why = record.not_stored_reason or "it was created with store: false"
            raise ApiError(404, f"response {response_id!r} was not stored: {why}", param="response_id",
                           code="response_not_found")
        return record




def _still_running(response_id: str) -> ApiError:
    return ApiError(409, f"response {response_id!r} is still in progress; cancel it (background "
                    "responses) or wait for it to finish, then delete it", param="response_id",
                    code="response_in_progress")


def _not_background(response_id: str) -> ApiError:
    return ApiError(400, f"response {response_id!r} was not created with background: true; only "
                    "background responses can be cancelled (a foreground one stops when its client "
                    "disconnects)", param="response_id", code="response_not_background")


def _not_cancellable(response_id: str, status: str) -> ApiError:
    if status in ACTIVE_STATUSES:  # recorded as running, but by no run of this process
        return ApiError(409, f"response {response_id!r} is recorded as {status!r} but is not running in this "
                        "server process, so it cannot be cancelled here", param="response_id",
                        code="response_not_cancellable")
    return ApiError(409, f"response {response_id!r} has already finished (status {status!r}); only queued or "
                    "in-progress background responses can be cancelled", param="response_id",
                    code="response_not_cancellable")





