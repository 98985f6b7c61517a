"""Hook implementations of the Chat Completions plugin (the legacy OpenAI surface)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from quart import Blueprint

from kernel import hookimpl
from plugins.chat_completions.routes import blueprint
from plugins.chat_completions.settings import ChatCompletionsSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.chat_completions")


@hookimpl
def register_settings() -> type[ChatCompletionsSettings]:
    """Options of ``[plugins.chat_completions]``."""
    return ChatCompletionsSettings


@hookimpl
def register_routes(kernel: Kernel, settings: ChatCompletionsSettings | None) -> list[Blueprint]:
    """``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/<id>``."""
    return [blueprint(kernel, settings or ChatCompletionsSettings())]


@hookimpl
def startup(kernel: Kernel) -> None:
    """Say once that this is the legacy surface, and where the current one is."""
    log.info(
        "chat_completions: serving OpenAI Chat Completions at /v1/chat/completions, the legacy surface; "
        "new clients should use OpenResponses at /v1/responses"
    )
