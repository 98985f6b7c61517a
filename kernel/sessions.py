"""Session keys and transcripts.

A session keeps the transcript per key so a client can send only its newest message.
Transcripts live in SQLite and survive restarts; runs on one session are serialised
by a per-key lock so their items never interleave.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import Mapping

from kernel.errors import ApiError
from kernel.store import Store
from kernel.types import Item, item_from_dict, item_to_dict

MAX_SESSION_KEY_LENGTH = 256

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS session_items (
        session_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        item TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_key, seq)
    )""",
]


def validate_session_key(key: str, *, param: str = "x-session-key") -> str:
    """Accept printable keys of bounded length; anything else is a 400 naming the source."""
    if not key or len(key) > MAX_SESSION_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            f"invalid session key: must be 1 to {MAX_SESSION_KEY_LENGTH} printable characters",
            param=param,
            code="invalid_session_key",
        )
    return key


def requested_session_key(
    headers: Mapping[str, str], *, agent: str, surface: str, user: str | None
) -> str | None:
    """``x-session-key`` as given; else ``agent:<id>:<surface>-user:<user>``; else None.

    None means the request asked for no session: endpoints that keep history only
    when asked (OpenAI-style surfaces) run such a turn without one.
    """
    given = headers.get("x-session-key")
    if given is not None:
        return validate_session_key(given)
    if user:
        return validate_session_key(f"agent:{agent}:{surface}-user:{user}", param="user")
    return None


def derive_session_key(
    headers: Mapping[str, str], *, agent: str, surface: str, user: str | None
) -> str:
    """Like :func:`requested_session_key`, but a fresh key when the request names none."""
    key = requested_session_key(headers, agent=agent, surface=surface, user=user)
    return key if key is not None else f"agent:{agent}:{surface}:{uuid.uuid4().hex}"


def main_session_key(agent: str) -> str:
    """The agent's main session (where webhooks post system events)."""
    return f"agent:{agent}:main"


class SessionStore:
    """Transcripts by session key, plus a lock per key."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def open(self) -> None:
        await self.store.ensure_schema(SCHEMA)

    def lock(self, key: str) -> asyncio.Lock:
        """The lock that serialises runs on ``key`` (kept while anyone holds a reference)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def load(self, key: str) -> list[Item]:
        """The whole transcript, oldest first."""
        rows = await self.store.fetchall(
            "SELECT item FROM session_items WHERE session_key = ? ORDER BY seq", (key,)
        )
        return [item_from_dict(json.loads(r["item"])) for r in rows]

    async def append(self, key: str, items: list[Item]) -> None:
        """Add items at the end of the transcript, atomically."""
        if not items:
            return
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT COALESCE(MAX(seq), -1) FROM session_items WHERE session_key = ?", (key,)
            ) as cur:
                row = await cur.fetchone()
            start = int(row[0]) + 1
            now = time.time()
            await db.executemany(
                "INSERT INTO session_items (session_key, seq, item, created_at) VALUES (?, ?, ?, ?)",
                [(key, start + i, json.dumps(item_to_dict(it)), now) for i, it in enumerate(items)],
            )

    async def clear(self, key: str) -> None:
        await self.store.execute("DELETE FROM session_items WHERE session_key = ?", (key,))
