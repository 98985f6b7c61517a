"""The response-store interface and its records (wire items are kept as JSON dicts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Order = Literal["asc", "desc"]
# Maps an interrupted response's event log to the output items worth keeping.
Salvage = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class ResponseRecord:
    """One stored response.

    ``input_items`` are only this response's own new input items (with ids) and
    ``output_items`` its own output; earlier turns are reached through
    ``previous_response_id``, so a chain costs O(n) storage, never O(n^2).
    ``stored`` is False for a tombstone: the id is known (so chaining onto it can be
    refused with a clear message, ``not_stored_reason``) but nothing else is kept.
    ``model_input`` is the model's view of this response's own input (kernel item
    dicts, media loaded), which chaining replays; ``input_items`` are the wire items
    as sent, which ``input_items`` listings return.
    """

    id: str
    owner: str
    status: str
    created_at: float
    previous_response_id: str | None = None
    resource: dict[str, Any] = field(default_factory=dict)
    input_items: list[dict[str, Any]] = field(default_factory=list)
    output_items: list[dict[str, Any]] = field(default_factory=list)
    stored: bool = True
    background: bool = False
    updated_at: float = 0.0
    model_input: list[dict[str, Any]] = field(default_factory=list)
    not_stored_reason: str | None = None
    # The agent that answered (the model field names it only sometimes); "" when unknown.
    agent: str = ""
    # The process executing it (kernel.store.leases); its lease is that process's.
    instance_id: str = ""


@dataclass
class ResponsePage:
    """A page of stored responses, newest first (``GET /-/responses``)."""

    records: list[ResponseRecord]
    has_more: bool
    # False when the ``after`` cursor names no response (deleted, expired, never existed).
    cursor_found: bool = True


@dataclass
class ChainLink:
    """What chaining needs of one response in a ``previous_response_id`` chain."""

    id: str
    status: str
    stored: bool
    model_input: list[dict[str, Any]]
    output_items: list[dict[str, Any]]
    not_stored_reason: str | None = None
    # Why the stored row cannot be decoded (see storage/damaged.py); None when it can.
    damaged: str | None = None


@dataclass
class StoredEvent:
    """One streamed event as it was sent, by sequence number."""

    sequence_number: int
    data: dict[str, Any]


@dataclass
class InputItemsPage:
    """A page of input items in OpenAI's list shape."""

    data: list[dict[str, Any]]
    has_more: bool

    def as_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0].get("id") if self.data else None,
            "last_id": self.data[-1].get("id") if self.data else None,
            "has_more": self.has_more,
        }


class ResponseStore(Protocol):
    """What the OpenResponses plugin needs from durable storage.

    Every read takes the ``owner`` (the API key's principal): another owner's response
    is indistinguishable from a missing one.
    """

    #: True when other processes read and write the same database (PostgreSQL).
    shared: bool

    async def open(self) -> None:
        """Create tables; idempotent."""

    async def create(self, record: ResponseRecord) -> int:
        """Insert a new response (before ``response.created`` is sent); returns the bytes stored."""

    async def create_many(self, records: list[ResponseRecord]) -> list[int]:
        """Insert several new responses in one transaction; the bytes each took."""

    async def update(
        self, response_id: str, *, status: str, resource: dict[str, Any], output_items: list[dict[str, Any]]
    ) -> int:
        """Replace the resource, output and status (at the end of a run); returns the bytes stored."""

    async def append_events(self, response_id: str, events: list[StoredEvent]) -> int:
        """Add streamed events to the response's event log; returns the bytes stored."""

    async def append_events_many(self, logs: list[tuple[str, list[StoredEvent]]]) -> list[int]:
        """Add events to several responses' logs in one transaction; the bytes each took."""

    async def events_after(self, response_id: str, after: int) -> list[StoredEvent]:
        """Events with ``sequence_number > after``, in order."""

    async def get(self, response_id: str, owner: str) -> ResponseRecord | None:
        """The record (tombstones included), or None when missing, deleted or not the owner's."""

    async def chain(self, response_id: str, owner: str) -> list[ResponseRecord]:
        """The response and its predecessors, oldest first (``[]`` if missing)."""

    async def history(self, response_id: str, owner: str) -> list[ChainLink]:
        """Like :meth:`chain` but only what the model's view needs, in one query: oldest first."""

    async def find_item(self, item_id: str, owner: str) -> ChainLink | None:
        """The newest stored response of ``owner`` holding an input or output item with this id."""

    async def discard(self, response_id: str, reason: str) -> None:
        """Turn a response into a tombstone (drop its items and event log), saying why."""

    async def delete(self, response_id: str, owner: str) -> bool:
        """Delete the response and its event log; False when there was nothing to delete."""

    async def input_item(self, response_id: str, item_id: str) -> dict[str, Any] | None:
        """One input item (wire shape) of a response found by :meth:`find_item` for its owner."""

    async def input_items(
        self, response_id: str, owner: str, *, limit: int, order: Order, after: str | None
    ) -> InputItemsPage | None:
        """A page of the response's input items, or None when the response is missing."""

    async def owner(self, response_id: str) -> str | None:
        """Who owns a response (admin lookups only), or None when it does not exist."""

    async def list_page(self, owner: str | None, *, limit: int, after: str | None, agent: str | None,
                        status: str | None) -> ResponsePage:
        """Stored responses newest first, after the response ``after``; every owner's when ``owner`` is None."""

    async def expire(self, older_than: float) -> int:
        """Delete finished responses created before ``older_than`` (epoch seconds) with their
        items and event logs, in short transactions; returns the count."""

    async def fail_interrupted(self, message: str, salvage: Salvage | None = None, *,
                               orphaned: tuple[str, tuple[Any, ...]] | None = None) -> int:
        """Mark queued/in-progress responses failed; returns the count.

        ``orphaned`` (SQL and parameters, see kernel.store.leases) limits it to those whose
        process holds no lease. ``salvage``, when given, turns each one's event log into the
        output it keeps.
        """
