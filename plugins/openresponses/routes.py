"""The Blueprint: ``POST /v1/responses`` and ``POST /v1/responses/compact``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from plugins.openresponses.service import ResponsesService
from plugins.openresponses.settings import OpenResponsesSettings

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

    return bp
