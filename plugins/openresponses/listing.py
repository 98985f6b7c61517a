"""``GET /-/responses``, ``GET``/``DELETE /-/responses/{id}``: stored responses for dashboards.

Not part of OpenAI's API (which has no listing of responses): the console and other
operators' tools use it. The owner rule is the gateway's usual one, with one
widening: an admin principal (the main secret, see :func:`kernel.is_admin`) sees and
deletes every key's responses; any other key sees only its own, and another key's
response answers 404 exactly like a missing one.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, g, request

from kernel import ApiError, is_admin
from plugins.openresponses.persistent import WRITE_WAIT_SECONDS, PersistentResponses, owner_of
from plugins.openresponses.query import DEFAULT_PAGE, MAX_PAGE, choice_arg, int_arg, json_response, response_not_found
from plugins.openresponses.retrieval import Retrieval
from plugins.openresponses.storage import ResponseRecord

STATUSES = ("queued", "in_progress", "completed", "incomplete", "failed", "cancelled")
PREVIEW_CHARS = 200


class Listing:
    """The views' logic: owner scoping (admin or owner), pages, details, deletes."""

    def __init__(self, stored: PersistentResponses, retrieval: Retrieval) -> None:
        self.stored = stored
        self.store = stored.store
        self.retrieval = retrieval

    async def list(self) -> Response:
        args = request.args
        limit = int_arg(args, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
        status = choice_arg(args, "status", STATUSES, default="") if args.get("status") else None
        after = args.get("after") or None
        owner = None if is_admin(g.principal) else owner_of(g.principal)
        if after is not None and await self._owner(after) is None:
            raise ApiError(400, f"invalid value for 'after': response {after!r} was not found (deleted, expired or "
                           "another key's); start again without 'after'", param="after", code="invalid_value")
        page = await self.store.list_page(owner, limit=limit, after=after, agent=args.get("agent") or None,
                                          status=status)
        data = [self._summary(record) for record in page.records]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": page.has_more})

    async def detail(self, response_id: str) -> Response:
        """The response, its input items, its event log (live or replayed) and who owns it."""
        owner = await self._owner(response_id)
        if owner is None:
            raise response_not_found(response_id)
        live = self.stored.live.get(response_id, owner)
        if live is not None and not live.discarded and not live.builder.done:
            resource, events = live.builder.resource(), list(live.builder.events)
            record = await self.store.get(response_id, owner)
            created, updated = live.builder.created_at, time.time()
        else:
            record = await self._stored(response_id, owner)
            resource, events = record.resource, await self.retrieval.replay_events(record)
            created, updated = record.created_at, record.updated_at
        page = await self.store.input_items(response_id, owner, limit=MAX_PAGE, order="asc", after=None)
        inputs = page.data if page is not None else []
        return json_response({
            "object": "response.detail", "id": response_id, "owner": owner,
            "agent": record.agent if record is not None else "",
            "response": resource, "input_items": inputs,
            "input_items_has_more": bool(page and page.has_more), "events": events,
            "timings": {"created_at": created, "updated_at": updated,
                        "completed_at": resource.get("completed_at"),
                        "duration_seconds": round(max(0.0, (resource.get("completed_at") or updated) - created), 3)},
        })

    async def delete(self, response_id: str) -> Response:
        owner = await self._owner(response_id)
        if owner is None:
            raise response_not_found(response_id)
        live = self.stored.live.get(response_id, owner)
        if live is not None and live.builder.done:
            await live.wait_settled(WRITE_WAIT_SECONDS)
        elif live is not None and not live.discarded:
            raise ApiError(409, f"response {response_id!r} is still in progress; cancel it or wait for it to "
                           "finish, then delete it", param="response_id", code="response_in_progress")
        if not await self.store.delete(response_id, owner):
            raise response_not_found(response_id)
        if live is not None:
            live.discarded = True
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    async def _owner(self, response_id: str) -> str | None:
        """The response's owner if the caller may see it, else None (missing looks the same)."""
        await self.stored.written(response_id)
        live = self.stored.live.entry(response_id)
        owner = live.owner if live is not None else await self.store.owner(response_id)
        if owner is None or not (is_admin(g.principal) or owner == owner_of(g.principal)):
            return None
        return owner

    async def _stored(self, response_id: str, owner: str) -> ResponseRecord:
        record = await self.store.get(response_id, owner)
        if record is None or not record.stored:
            raise response_not_found(response_id)
        return record

    @staticmethod
    def _summary(record: ResponseRecord) -> dict[str, Any]:
        resource = record.resource
        text = "".join(part.get("text", "") for item in record.output_items if item.get("type") == "message"
                       for part in item.get("content") or [] if isinstance(part, dict))
        return {
            "id": record.id, "object": "response", "created_at": record.created_at, "status": record.status,
            "owner": record.owner, "agent": record.agent, "model": resource.get("model", ""),
            "background": record.background, "previous_response_id": record.previous_response_id,
            "usage": resource.get("usage"), "output_text_preview": text[:PREVIEW_CHARS],
        }


def add_listing(bp: Blueprint, stored: PersistentResponses, retrieval: Retrieval) -> None:
    """Register the three routes on the plugin's blueprint."""
    listing = Listing(stored, retrieval)

    @bp.get("/-/responses")
    async def list_responses() -> Response:
        return await listing.list()

    @bp.get("/-/responses/<response_id>")
    async def response_detail(response_id: str) -> Response:
        return await listing.detail(response_id)

    @bp.delete("/-/responses/<response_id>")
    async def delete_listed_response(response_id: str) -> Response:
        return await listing.delete(response_id)
