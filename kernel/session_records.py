"""Sessions addressed by id: records, item pages, single items, deletion and expiry.

A session is a transcript under a key (:mod:`kernel.sessions`). Some sessions are
also *records*: created by id (an OpenAI conversation is one: its key is its id),
with an owner, metadata and timestamps in ``session_meta``. Any session can be read
through this interface, with or without a record: a session known only by its key
(``x-session-key``, ``user``, a webhook's main session) is found by that key, in the
asking principal's namespace, and shows no metadata until some is set.

Every method takes the principal asking; another principal's session is never found.
The interface is small on purpose (records, pages, one item, deletes, expiry) so a
second backend only has to answer these queries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from kernel.auth import DEFAULT_PRINCIPAL
from kernel.sessions import SessionStore, append_rows
from kernel.types import Item, item_from_dict

Order = Literal["asc", "desc"]
# Sessions deleted per transaction by an expiry sweep.
EXPIRE_BATCH = 200


@dataclass
class SessionRecord:
    """A session as its owner sees it. ``key`` is the key the owner names it by."""

    id: str
    key: str
    owner: str
    created_at: float
    updated_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    # False for a session known only by its key (no record row yet).
    registered: bool = True


@dataclass
class SessionItem:
    """One transcript item with its id, status (None: completed) and time appended."""

    id: str
    item: Item
    status: str | None
    created_at: float


@dataclass
class ItemPage:
    """A page of items in the order asked, and whether more follow."""

    items: list[SessionItem]
    has_more: bool


class CursorNotFoundError(LookupError):
    """The ``after`` item of a page request is not in the session."""


class SessionRecords:
    """Records and item access over a :class:`SessionStore` (the same tables, one transcript)."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.store = sessions.store

    # ------------------------------------------------------------------ records

    async def create(self, principal: str | None, session_id: str, *, metadata: dict[str, str],
                     items: list[Item]) -> SessionRecord:
        """A new session whose key is its id, with its first items, in one transaction."""
        owner = principal or DEFAULT_PRINCIPAL
        stored = self.sessions.scoped(principal, session_id)
        now = time.time()
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO session_meta (session_key, id, owner, created_at, updated_at, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?)", (stored, session_id, owner, now, now, _dumps(metadata)))
            if items:
                await append_rows(db, stored, items)
        return SessionRecord(session_id, session_id, owner, now, now, dict(metadata))

    async def find(self, principal: str | None, ident: str) -> SessionRecord | None:
        """The session ``ident`` names for ``principal``: a record's id, else a key holding items."""
        owner = principal or DEFAULT_PRINCIPAL
        row = await self.store.fetchone(
            "SELECT session_key, id, owner, created_at, updated_at, metadata FROM session_meta "
            "WHERE id = ? AND owner = ?", (ident, owner))
        if row is not None:
            return _record(row, key=row["id"])
        stored = self.sessions.scoped(principal, ident)
        row = await self.store.fetchone(
            "SELECT session_key, id, owner, created_at, updated_at, metadata FROM session_meta "
            "WHERE session_key = ? AND owner = ?", (stored, owner))
        if row is not None:
            return _record(row, key=ident)
        # The first and last items by position (the primary key): O(log n) at any length.
        first = await self.store.fetchone(
            "SELECT created_at FROM session_items WHERE session_key = ? ORDER BY seq ASC LIMIT 1", (stored,))
        if first is None:
            return None
        last = await self.store.fetchone(
            "SELECT created_at FROM session_items WHERE session_key = ? ORDER BY seq DESC LIMIT 1", (stored,))
        updated = last["created_at"] if last is not None else first["created_at"]
        return SessionRecord(ident, ident, owner, first["created_at"], updated, {}, registered=False)

    async def set_metadata(self, principal: str | None, record: SessionRecord,
                           metadata: dict[str, str]) -> SessionRecord:
        """Replace the metadata (a key-only session gets its record now, its id being its key)."""
        stored = self.sessions.scoped(principal, record.key)
        now = time.time()
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO session_meta (session_key, id, owner, created_at, updated_at, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_key) DO UPDATE SET metadata = excluded.metadata, "
                "updated_at = excluded.updated_at",
                (stored, record.id, record.owner, record.created_at, now, _dumps(metadata)))
        return SessionRecord(record.id, record.key, record.owner, record.created_at, now, dict(metadata))

    async def delete(self, principal: str | None, record: SessionRecord) -> None:
        """Delete the session's record and every item (after a turn running on it has ended)."""
        stored = self.sessions.scoped(principal, record.key)
        # Under the lock: a turn still running on the session would otherwise save its
        # items after the delete and bring the session back.
        async with self.sessions.lock(record.key, principal=principal), self.store.transaction() as db:
            await db.execute("DELETE FROM session_items WHERE session_key = ?", (stored,))
            await db.execute("DELETE FROM session_meta WHERE session_key = ?", (stored,))

    async def expire(self, older_than: float) -> int:
        """Delete recorded sessions untouched since ``older_than`` (epoch seconds), in short
        transactions; returns the count. Sessions known only by key are not records: kept."""
        total = 0
        while True:
            rows = await self.store.fetchall(
                "SELECT session_key FROM session_meta WHERE updated_at < ? LIMIT ?", (older_than, EXPIRE_BATCH))
            if not rows:
                return total
            keys = [row["session_key"] for row in rows]
            marks = ",".join("?" * len(keys))
            async with self.store.transaction() as db:
                await db.execute(f"DELETE FROM session_items WHERE session_key IN ({marks})", keys)
                await db.execute(f"DELETE FROM session_meta WHERE session_key IN ({marks}) AND updated_at < ?",
                                 (*keys, older_than))
            total += len(keys)

    # ------------------------------------------------------------------ items

    async def append(self, principal: str | None, record: SessionRecord, items: list[Item]) -> list[SessionItem]:
        """Add items at the end (under the session's lock, so a running turn never interleaves)."""
        async with self.sessions.lock(record.key, principal=principal):
            ids = await self.sessions.append(record.key, items, principal=principal)
        now = time.time()
        return [SessionItem(item_id, item, None, now) for item_id, item in zip(ids, items, strict=True)]

    async def page(self, principal: str | None, record: SessionRecord, *, limit: int, order: Order,
                   after: str | None) -> ItemPage:
        """Up to ``limit`` items after the item ``after`` (exclusive) in ``order``.

        Keyed by the transcript's position (the primary key), so a page costs the same
        at any depth and stays stable while items are appended.
        """
        stored = self.sessions.scoped(principal, record.key)
        params: list[Any] = [stored]
        where = "session_key = ?"
        if after is not None:
            row = await self.store.fetchone("SELECT seq FROM session_items WHERE session_key = ? AND item_id = ?",
                                            (stored, after))
            if row is None:
                raise CursorNotFoundError(after)
            where += " AND seq > ?" if order == "asc" else " AND seq < ?"
            params.append(row["seq"])
        direction = "ASC" if order == "asc" else "DESC"
        rows = await self.store.fetchall(
            f"SELECT item_id, item, status, created_at FROM session_items WHERE {where} "
            f"ORDER BY seq {direction} LIMIT ?", (*params, limit + 1))
        return ItemPage([_item(row) for row in rows[:limit]], has_more=len(rows) > limit)

    async def item(self, principal: str | None, record: SessionRecord, item_id: str) -> SessionItem | None:
        """One item by id, or None."""
        row = await self.store.fetchone(
            "SELECT item_id, item, status, created_at FROM session_items WHERE session_key = ? AND item_id = ?",
            (self.sessions.scoped(principal, record.key), item_id))
        return _item(row) if row is not None else None

    async def delete_item(self, principal: str | None, record: SessionRecord, item_id: str) -> bool:
        """Delete one item (under the session's lock); False when it was not there."""
        stored = self.sessions.scoped(principal, record.key)
        async with self.sessions.lock(record.key, principal=principal):
            async with self.store.transaction() as db:
                deleted = await db.execute("DELETE FROM session_items WHERE session_key = ? AND item_id = ?",
                                           (stored, item_id)) > 0
                if deleted:
                    await db.execute("UPDATE session_meta SET updated_at = ? WHERE session_key = ?",
                                     (time.time(), stored))
        return deleted


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _record(row: Any, *, key: str) -> SessionRecord:
    return SessionRecord(row["id"], key, row["owner"], row["created_at"], row["updated_at"],
                         json.loads(row["metadata"]))


def _item(row: Any) -> SessionItem:
    return SessionItem(row["item_id"], item_from_dict(json.loads(row["item"])), row["status"], row["created_at"])
