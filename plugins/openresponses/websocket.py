"""WebSocket mode on ``/v1/responses`` (OpenResponses 2026-04-24): the route and the client messages.

A client opens ``GET /v1/responses`` with an upgrade (``Authorization: Bearer`` like
any request; the kernel's ``before_websocket`` refuses a bad secret with 401 before
the handshake) and sends ``{"type": "response.create", ...CreateResponseBody}`` text
messages. Each is answered with exactly the events of the SSE stream, one JSON text
message per event (:mod:`plugins.openresponses.ws_session` runs the connection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, g, websocket

from kernel.agents import AGENT_HEADERS
from plugins.openresponses.ws_session import ResponsesSocket

if TYPE_CHECKING:
    from plugins.openresponses.service import ResponsesService


def add_websocket(bp: Blueprint, service: ResponsesService) -> None:
    """Serve WebSocket mode on the same path as ``POST /v1/responses``."""

    async def responses_socket() -> Any:
        # The agent is resolved per response.create (Codex opens the socket before it names
        # a model); only an x-agent-id header can name an unknown agent this early, and then
        # the upgrade is refused with that 404 rather than accepted and left to fail later.
        if any(websocket.headers.get(name) for name in AGENT_HEADERS):
            service.kernel.agents.resolve(None, websocket.headers)
        await websocket.accept()
        socket = ResponsesSocket(service, websocket._get_current_object(), principal=g.principal,
                                 headers=websocket.headers)
        await socket.serve()
        return None

    bp.add_websocket("/v1/responses", "responses_socket", responses_socket)
