"""The Conversations endpoints: ``/v1/conversations`` and its items, each caller's own.

Every route finds the conversation in the caller's namespace (its API key's): another
key's conversation, or one deleted or expired, is a 404 on every route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

from kernel import ApiError, Item
from kernel.http import read_json
from kernel.media import MediaLoader
from kernel.session_records import CursorNotFoundError, SessionRecord, SessionRecords
from plugins.openresponses import resource as r
from plugins.openresponses.conversations import params as p
from plugins.openresponses.conversations import wire
from plugins.openresponses.conversations.turns import not_found
from plugins.openresponses.items import resolve_items
from plugins.openresponses.query import json_response, page_query
from plugins.openresponses.retention import Sweeper, parse_duration
from plugins.openresponses.settings import OpenResponsesSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.openresponses")

# item_reference in added items: an item of the caller's stored responses, or None.
ItemLookup = Callable[[str, str | None], Awaitable[Item | None]]


class ConversationsService:
    """Serves the conversation routes for one kernel; ``lookup`` resolves ``item_reference``."""

    def __init__(self, kernel: Kernel, settings: OpenResponsesSettings, lookup: ItemLookup | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        self.records = SessionRecords(kernel.sessions)
        self._lookup = lookup
        self._sweeper: Sweeper | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def retention_seconds(self) -> float | None:
        return retention_seconds(self.settings)

    def start(self) -> None:
        """Start the retention sweep (conversations untouched for longer are deleted with their items)."""
        retention = self.retention_seconds
        if retention is not None:
            self._sweeper = Sweeper(self._expire_if_leader, retention, self.settings.sweep_interval_seconds)
            self._sweeper.start()

    async def stop(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()

    async def _expire_if_leader(self, older_than: float) -> int:
        # Once across the cluster: only the store's housekeeping leader sweeps.
        if not await self.kernel.store.lead():
            return 0
        return await self.records.expire(older_than)

    async def sweep(self, now: float | None = None) -> int:
        """Delete conversations idle past the retention (what the periodic sweep does); the count."""
        retention = self.retention_seconds
        if retention is None:
            return 0
        return await self.records.expire((time.time() if now is None else now) - retention)

    # ------------------------------------------------------------------ conversations

    async def create(self) -> Response:
        data = p.body_object(await read_json(self.settings.max_body_bytes, require_object=False))
        metadata = p.parse_metadata(data.get("metadata"))
        items = await self._items(data.get("items"), required=False)
        conversation_id = r.new_id(wire.CONVERSATION_PREFIX)
        record = await self.records.create(g.principal, conversation_id, metadata=metadata, items=items)
        return json_response(wire.conversation_object(record))

    async def retrieve(self, conversation_id: str) -> Response:
        return json_response(wire.conversation_object(await self._find(conversation_id)))

    async def update(self, conversation_id: str) -> Response:
        data = p.body_object(await read_json(self.settings.max_body_bytes, require_object=False))
        if "metadata" not in data:
            raise ApiError(400, "missing required parameter: 'metadata'", param="metadata",
                           code="missing_required_parameter")
        metadata = p.parse_metadata(data["metadata"])
        record = await self._find(conversation_id)
        record = await self.records.set_metadata(g.principal, record, metadata)
        return json_response(wire.conversation_object(record))

    async def delete(self, conversation_id: str) -> Response:
        record = await self._find(conversation_id)
        if self.kernel.sessions.lock(record.key, principal=g.principal).locked():
            log.info("conversation %r: a turn is running on it; deleting once it has ended", record.id[:80])
        await self.records.delete(g.principal, record)
        return json_response(wire.deleted_object(record.id))

    # ------------------------------------------------------------------ items

    async def list_items(self, conversation_id: str) -> Response:
        query = page_query(request.args)
        record = await self._find(conversation_id)
        try:
            page = await self.records.page(g.principal, record, limit=query.limit, order=query.order,  # type: ignore[arg-type]
                                           after=query.after)
        except CursorNotFoundError:
            raise ApiError(400, f"invalid value for 'after': item {query.after!r} is not in conversation "
                           f"{conversation_id!r} (it may have been deleted)", param="after",
                           code="invalid_value") from None
        return json_response(wire.item_list(page.items, page.has_more))

    async def add_items(self, conversation_id: str) -> Response:
        data = p.body_object(await read_json(self.settings.max_body_bytes, require_object=False))
        record = await self._find(conversation_id)
        items = await self._items(data.get("items"), required=True)
        added = await self.records.append(g.principal, record, items)
        return json_response(wire.item_list(added, has_more=False))

    async def get_item(self, conversation_id: str, item_id: str) -> Response:
        record = await self._find(conversation_id)
        found = await self.records.item(g.principal, record, item_id)
        if found is None:
            raise _item_not_found(conversation_id, item_id)
        return json_response(wire.wire_item(found))

    async def delete_item(self, conversation_id: str, item_id: str) -> Response:
        record = await self._find(conversation_id)
        if not await self.records.delete_item(g.principal, record, item_id):
            raise _item_not_found(conversation_id, item_id)
        return json_response(wire.conversation_object(record))

    # ------------------------------------------------------------------ helpers

    async def _find(self, conversation_id: str) -> SessionRecord:
        if len(conversation_id) > p.MAX_ID_LENGTH or not conversation_id.isprintable():
            raise not_found(conversation_id[:p.MAX_ID_LENGTH])  # no session key can look like this
        record = await self.records.find(g.principal, conversation_id)
        if record is None:
            raise not_found(conversation_id)
        return record

    async def _items(self, raw: Any, *, required: bool) -> list[Item]:
        drafts, needs = p.parse_items(raw, required=required)
        if not needs:
            return drafts  # type: ignore[return-value]  # no pending media or references
        principal = g.principal

        async def lookup(item_id: str) -> Item | None:
            return await self._lookup(item_id, principal) if self._lookup is not None else None

        return await resolve_items(drafts, MediaLoader(self.settings.media), lookup)


def retention_seconds(settings: OpenResponsesSettings) -> float | None:
    """``conversation_retention`` if set, else the responses' ``retention``; None keeps forever."""
    chosen = settings.conversation_retention
    return parse_duration(chosen) if chosen is not None else settings.retention_seconds


def _item_not_found(conversation_id: str, item_id: str) -> ApiError:
    return ApiError(404, f"item {item_id!r} was not found in conversation {conversation_id!r}", param="item_id",
                    code="item_not_found")




def add_routes(bp: Any, service: ConversationsService) -> None:
    """The conversation routes on the plugin's Blueprint."""

    @bp.post("/v1/conversations")
    async def create_conversation() -> Response:
        return await service.create()

    @bp.get("/v1/conversations/<conversation_id>")
    async def retrieve_conversation(conversation_id: str) -> Response:
        return await service.retrieve(conversation_id)

    @bp.post("/v1/conversations/<conversation_id>")
    async def update_conversation(conversation_id: str) -> Response:
        return await service.update(conversation_id)

    @bp.delete("/v1/conversations/<conversation_id>")
    async def delete_conversation(conversation_id: str) -> Response:
        return await service.delete(conversation_id)

    @bp.get("/v1/conversations/<conversation_id>/items")
    async def list_conversation_items(conversation_id: str) -> Response:
        return await service.list_items(conversation_id)

    @bp.post("/v1/conversations/<conversation_id>/items")
    async def add_conversation_items(conversation_id: str) -> Response:
        return await service.add_items(conversation_id)

    @bp.get("/v1/conversations/<conversation_id>/items/<item_id>")
    async def get_conversation_item(conversation_id: str, item_id: str) -> Response:
        return await service.get_item(conversation_id, item_id)

    @bp.delete("/v1/conversations/<conversation_id>/items/<item_id>")
    async def delete_conversation_item(conversation_id: str, item_id: str) -> Response:
        return await service.delete_item(conversation_id, item_id)
