"""Hook implementations of the OpenResponses plugin."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from pydantic import BaseModel
from quart import Blueprint

from kernel import Schema, hookimpl
from plugins.openresponses.conversations.service import ConversationsService
from plugins.openresponses.persistent import PersistentResponses
from plugins.openresponses.routes import blueprint
from plugins.openresponses.service import ResponsesService
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.storage import SCHEMA, SqlResponseStore
from plugins.openresponses.stored import StoredResponses

if TYPE_CHECKING:
    from kernel.runtime import Kernel

# One response store per kernel (tests build several apps in one process).
_STORED: weakref.WeakKeyDictionary[Kernel, StoredResponses] = weakref.WeakKeyDictionary()
_CONVERSATIONS: weakref.WeakKeyDictionary[Kernel, ConversationsService] = weakref.WeakKeyDictionary()


def make_stored(kernel: Kernel, settings: OpenResponsesSettings) -> StoredResponses:
    """The response store: tables in the kernel's store (SQLite or PostgreSQL)."""
    return PersistentResponses(settings, SqlResponseStore(kernel.store), kernel.leases)


@hookimpl
def register_settings() -> type[BaseModel]:
    return OpenResponsesSettings


@hookimpl
def register_migrations() -> list[Schema]:
    return [SCHEMA]


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    opts = settings if isinstance(settings, OpenResponsesSettings) else OpenResponsesSettings()
    stored = _STORED[kernel] = make_stored(kernel, opts)
    service = ResponsesService(kernel, opts, stored)
    _CONVERSATIONS[kernel] = service.conversations
    return [blueprint(kernel, opts, service)]


@hookimpl
async def startup(kernel: Kernel) -> None:
    """Open the response store, fail runs a restart interrupted, start the retention sweep."""
    stored = _STORED.get(kernel)
    if stored is not None:
        await stored.start()
    conversations = _CONVERSATIONS.get(kernel)
    if conversations is not None:
        conversations.start()


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    """Stop the sweep and let pending writes land (runs have drained by now)."""
    conversations = _CONVERSATIONS.get(kernel)
    if conversations is not None:
        await conversations.stop()
    stored = _STORED.get(kernel)
    if stored is not None:
        await stored.stop()
