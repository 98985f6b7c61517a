"""One WebSocket connection on ``/v1/responses``: turns in order, connection-local state, limits.

* **Turns**: each ``response.create`` goes through the same create path as
  ``POST /v1/responses`` (:meth:`ResponsesService.prepare` / ``launch``), and the
  builder's events go out one JSON text message each, encoded exactly as the SSE
  ``data:`` lines are. One turn runs at a time; a ``response.create`` sent meanwhile
  gets a 409 error event and the running turn is left alone.
* **Connection-local state**: the connection's most recent response (its chain as
  the model sees it) is kept in memory, so the next turn continues from it with
  ``previous_response_id`` and only new input, without a store round trip, whether
  it was stored or not. ``store: false`` turns are never written anywhere (no record,
  no tombstone). A continuation that fails evicts the id it named, so a retry fails
  the same way (for a stored id, the store still has it).
* **Limits**: the connection lasts at most ``websocket_max_connection_seconds`` (an
  error event ``websocket_connection_limit_reached`` and a clean close, after a
  running turn ends); an idle one closes after ``websocket_idle_timeout_seconds``;
  messages are capped at ``max_body_bytes``. A client that goes away cancels its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kernel import ApiError, Item
from plugins.openresponses.builder import TERMINAL_EVENTS, ResponseBuilder
from plugins.openresponses.item_views import output_to_items
from plugins.openresponses.service import request_notes
from plugins.openresponses.stream import encode_json
from plugins.openresponses.ws_messages import decode_message, parse_create_message

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from plugins.openresponses.service import Prepared, ResponsesService

log = logging.getLogger("plugins.openresponses")

LIMIT_CODE = "websocket_connection_limit_reached"
IN_FLIGHT_CODE = "response_already_in_flight"
# Statuses whose response a later turn may continue from (a failed or cancelled one: no).
CONTINUABLE = frozenset({"completed", "incomplete"})


def error_event(exc: ApiError) -> dict[str, Any]:
    """The spec's ``WebSocketErrorEvent`` for an error outside (or instead of) a response."""
    return {"type": "error", "status": exc.status,
            "error": {"type": exc.type, "code": exc.code or exc.type, "message": exc.message, "param": exc.param}}


class ConnectionCache:
    """The connection's most recent response: its id and the model's view of its chain. Memory only."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._chain: list[Item] = []

    def get(self, response_id: str) -> list[Item] | None:
        return list(self._chain) if response_id == self._id else None

    def put(self, response_id: str, chain: list[Item]) -> None:
        self._id, self._chain = response_id, chain

    def evict(self, response_id: str) -> None:
        if response_id == self._id:
            self._id, self._chain = None, []

    def __contains__(self, response_id: object) -> bool:
        return response_id == self._id


class ResponsesSocket:
    """Serves one accepted WebSocket until the client leaves, a limit is reached or the server stops."""

    def __init__(self, service: ResponsesService, ws: Websocket, *, principal: str | None,
                 headers: Mapping[str, str]) -> None:
        self.service = service
        self.settings = service.settings
        self.ws = ws
        self.principal = principal
        self.headers = headers
        self.cache = ConnectionCache()
        self.turns = 0  # turns started (tests and logs)
        self._turn: asyncio.Task[None] | None = None
        self._last_activity = 0.0

    # ------------------------------------------------------------------ the connection

    async def serve(self) -> None:
        """Read messages and run turns; returns once the socket is closed (by either side)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.websocket_max_connection_seconds
        idle = self.settings.websocket_idle_timeout_seconds
        self._last_activity = loop.time()
        stopping = asyncio.ensure_future(self.service.kernel.shutting_down.wait())
        receive: asyncio.Future[str | bytes] | None = None
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    await self._finish_turn()
                    await self._send(error_event(ApiError(
                        400, f"this connection reached its {self.settings.websocket_max_connection_seconds:g} s "
                        "limit; open a new one (continue from a stored response, or resend the conversation)",
                        code=LIMIT_CODE)))
                    await self.ws.close(1000, "connection limit reached")
                    return
                if self._turn is None and now >= self._last_activity + idle:
                    await self.ws.close(1000, "idle timeout")
                    return
                # While a turn runs the socket is not idle: look again in at most `idle`.
                wake = deadline if self._turn is not None else min(deadline, self._last_activity + idle)
                if receive is None:
                    receive = asyncio.ensure_future(self.ws.receive())
                done, _ = await asyncio.wait({receive, stopping}, timeout=max(0.0, min(wake, now + idle) - now),
                                             return_when=asyncio.FIRST_COMPLETED)
                if receive in done:
                    message, receive = receive.result(), None
                    self._last_activity = loop.time()
                    await self._on_message(message)
                elif stopping in done:
                    await self._finish_turn()  # the server drains running turns; let this one end
                    await self.ws.close(1001, "server stopping")
                    return
        finally:
            for task in (receive, stopping, self._turn):
                if task is not None:
                    task.cancel()  # a client that left cancels its turn (and so its run)

    async def _on_message(self, message: str | bytes) -> None:
        try:
            data = decode_message(message, self.settings.max_body_bytes)
        except ApiError as exc:
            await self._send(error_event(exc))
            return
        if self._turn is not None:
            await self._send(error_event(ApiError(
                409, "a response is already in progress on this connection; send response.create once it has "
                "ended (its terminal event), or open another connection", code=IN_FLIGHT_CODE)))
            return
        self.turns += 1
        self._turn = asyncio.ensure_future(self._run_turn(data))

    async def _finish_turn(self) -> None:
        if self._turn is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._turn)

    async def _send(self, event: dict[str, Any]) -> None:
        # The very bytes of the SSE data: line (compact JSON, UTF-8), as a text message.
        await self.ws.send(encode_json(event).decode())

    # ------------------------------------------------------------------ a turn

    async def _run_turn(self, data: dict[str, Any]) -> None:
        previous_id = data.get("previous_response_id")
        try:
            ok = await self._turn_body(data)
        except ApiError as exc:
            ok = False
            await self._send(error_event(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            ok = False
            log.exception("websocket turn failed")
            await self._send(error_event(ApiError(500, "internal server error while running this turn",
                                                  type="server_error", code="internal_error")))
        finally:
            self._turn = None
            self._last_activity = asyncio.get_running_loop().time()
        if not ok and isinstance(previous_id, str):
            # A failed continuation must not leave its base usable: a retry fails the same way.
            self.cache.evict(previous_id)

    async def _turn_body(self, data: dict[str, Any]) -> bool:
        """Run one turn; True when it produced a response later turns may continue from."""
        parsed, generate = parse_create_message(data, self.settings.hosted_tools)
        request_notes(parsed)  # a WebSocket has no per-turn headers: the warning log still names omissions
        prepared = await self.service.prepare(parsed, self.headers, self.principal, previous=self._previous)
        if not generate:
            return await self._warmup(prepared)
        store = parsed.params.store
        started = await self.service.launch(prepared, self.principal, record=store)
        builder, follower = started.builder, started.follower
        assert follower is not None  # a WebSocket turn always streams
        try:
            async for event in follower.follow():
                if store and event["type"] in TERMINAL_EVENTS:
                    await self._settle(builder)  # durable before the client can act on its id
                await self._send(event)
        finally:
            started.run.cancel()  # no-op once it ended; a socket closed mid-turn cancels the run
        return self._remember(builder, prepared)

    async def _warmup(self, prepared: Prepared) -> bool:
        """``generate: false``: record the request's state and answer a completed, empty response."""
        parsed = prepared.parsed
        builder = ResponseBuilder(parsed.params)
        if parsed.params.store:
            await self.service.stored.track(builder, None, parsed, prepared.items, self.principal)
        builder.complete_without_output()
        if parsed.params.store:
            await self._settle(builder)
        for event in builder.events:
            await self._send(event)
        return self._remember(builder, prepared)

    def _remember(self, builder: ResponseBuilder, prepared: Prepared) -> bool:
        if builder.status not in CONTINUABLE:
            return False
        output = output_to_items(builder.resource()["output"])
        self.cache.put(builder.id, [*prepared.chain, *output])
        return True

    async def _settle(self, builder: ResponseBuilder) -> None:
        try:
            await self.service.stored.settle(builder)
        except Exception:
            # The events still go out; the failure is the server's to fix: log it.
            log.exception("response %s: could not be settled", builder.id)

    async def _previous(self, response_id: str) -> list[Item]:
        cached = self.cache.get(response_id)
        if cached is not None:
            return cached
        return await self.service.stored.previous_items(response_id, self.principal)
