"""The Blueprint: ``POST /v1/responses`` (and WebSocket mode on that path), ``POST /v1/responses/compact``
and, with a response store, ``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``
and ``POST /v1/responses/{id}/cancel``, plus the admin-or-owner listing ``GET /-/responses``,
``GET``/``DELETE /-/responses/{id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from plugins.openresponses.conversations.service import add_routes as add_conversation_routes
from plugins.openresponses.listing import add_listing
from plugins.openresponses.persistent import PersistentResponses
from plugins.openresponses.retrieval import Retrieval
from plugins.openresponses.service import ResponsesService
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.websocket import add_websocket

if TYPE_CHECKING:
    from kernel.runtime import Kernel


def blueprint(kernel: Kernel, settings: OpenResponsesSettings, service: ResponsesService | None = None) -> Blueprint:
    """The plugin's routes around one kernel (``service`` lets a store be plugged in)."""
    svc = service or ResponsesService(kernel, settings)
    bp = Blueprint("openresponses", __name__)

    @bp.post("/v1/responses")
    async def create_response() -> Response:
        return await svc.create()

    @bp.post("/v1/responses/compact")
    async def compact_response() -> Response:
        return await svc.compact()

    add_websocket(bp, svc)
    add_conversation_routes(bp, svc.conversations)

    if isinstance(svc.stored, PersistentResponses):
        retrieval = Retrieval(svc.stored, settings)
        _add_retrieval(bp, retrieval)
        add_listing(bp, svc.stored, retrieval)
    return bp


def _add_retrieval(bp: Blueprint, retrieval: Retrieval) -> None:
    @bp.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Response:
        return await retrieval.retrieve(response_id)

    @bp.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Response:
        return await retrieval.delete(response_id)

    @bp.get("/v1/responses/<response_id>/input_items")
    async def list_input_items(response_id: str) -> Response:
        return await retrieval.input_items(response_id)

    @bp.post("/v1/responses/<response_id>/cancel")
    async def cancel_response(response_id: str) -> Response:
        return await retrieval.cancel(response_id)
