"""Session keys and transcripts.

A session keeps the transcript per key so a client can send only its newest message.
Transcripts live in the kernel's store and survive restarts; runs on one session are
serialised by a per-key lock so their items never interleave (an in-process lock: see
docs/scaling.md for what holds across processes).

Sessions belong to the principal that made them, like stored responses: the key a
client names is looked up in that principal's own namespace (:meth:`SessionStore.scoped`),
so another API key sending the same ``x-session-key`` (or ``user``) gets a fresh session
of its own. Main-session keys (``agent:<agent>:main``) are reserved: they reach the real
main session only for the principals allowed to (``[kernel] main_session_principal`` and
in-process plugins that asked, like the hooks plugin); anyone else gets a private one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

from kernel.auth import DEFAULT_PRINCIPAL
from kernel.errors import ApiError, ConfigError
from kernel.store import Migration, Schema, Store, Transaction, migrate
from kernel.store.leases import INSTANCES_TABLE
from kernel.types import Item, item_from_dict, item_to_dict

MAX_SESSION_KEY_LENGTH = 256
MAX_NOTED_STATUSES = 10_000
# Joins a principal and a client's key in the stored key. Not printable, so no key a
# client may send (validate_session_key) can contain it or spell another's namespace.
NAMESPACE_SEPARATOR = "\x1f"

async def _item_columns(tx: Transaction) -> None:
    """Give session_items its item id and status columns (a SQLite file made before them), then
    the unique index that item pages use as their cursor."""
    if tx.dialect == "sqlite":
        present = {row["name"] for row in await tx.fetchall("PRAGMA table_info(session_items)")}
        missing = [name for name in ITEM_COLUMNS if name not in present]
        for name in missing:
            await tx.execute(f"ALTER TABLE session_items ADD COLUMN {name} {ITEM_COLUMNS[name]}")
        if "item_id" in missing:
            # Transcripts written before ids existed get theirs once, here.
            await tx.execute("UPDATE session_items SET item_id = 'item_' || lower(hex(randomblob(12))) "
                             "WHERE item_id IS NULL")
    await tx.execute(ITEM_INDEX)


# Columns added to session_items after its first release: every item's id (unique in its
# session: item pages use it as their cursor) and its status ("incomplete" for the item a
# cancel or failure cut short; NULL means completed). Created with the table on a new store.
ITEM_COLUMNS = {"item_id": "TEXT", "status": "TEXT"}
ITEM_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS session_items_item ON session_items (session_key, item_id)"

KERNEL_SCHEMA = Schema("kernel", (
    Migration(1, "sessions: transcripts and records", (
        """CREATE TABLE IF NOT EXISTS session_items (
            session_key TEXT NOT NULL,
            seq INTEGER NOT NULL,
            item TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            item_id TEXT,
            status TEXT,
            PRIMARY KEY (session_key, seq)
        )""",
        # A session's record (kernel.session_records): its public id, owner and metadata. Only
        # sessions created by id (e.g. an OpenAI conversation) or given metadata have one.
        """CREATE TABLE IF NOT EXISTS session_meta (
            session_key TEXT PRIMARY KEY,
            id TEXT NOT NULL,
            owner TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX IF NOT EXISTS session_meta_updated ON session_meta (updated_at)",
        # Ids are unique per owner (a key-only session's id is its key, which two owners may share).
        "CREATE UNIQUE INDEX IF NOT EXISTS session_meta_id ON session_meta (owner, id)",
    )),
    Migration(2, "session items: ids and statuses", (_item_columns,)),
    Migration(3, "process leases (several processes on one database)", (INSTANCES_TABLE,)),
))


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


def is_main_session_key(key: str) -> bool:
    """True for ``agent:<agent>:main``, the reserved main-session keys of every agent."""
    return key.startswith("agent:") and key.endswith(":main") and len(key) > len("agent::main")


class SessionLock:
    """One session's turn lock: in memory first (one waiter per process reaches the
    database), then the store's key lock, which other processes on a shared database
    also take (a PostgreSQL advisory lock, held on its own connection for the turn)."""

    def __init__(self, store: Store, stored_key: str) -> None:
        self._local = asyncio.Lock()
        self._store = store
        self._key = "session-turn:" + stored_key
        self._held: AbstractAsyncContextManager[None] | None = None

    def locked(self) -> bool:
        """True while a turn of this process holds (or is taking) the lock."""
        return self._local.locked()

    async def acquire(self) -> None:
        await self._local.acquire()
        if not self._store.shared:
            return
        held = self._store.key_lock(self._key)
        try:
            await held.__aenter__()
        except BaseException:
            self._local.release()
            raise
        self._held = held

    def release(self) -> None:
        """Let the next turn in (the database lock is given up in the background)."""
        held, self._held = self._held, None
        if held is not None:
            task = asyncio.get_running_loop().create_task(self._unlock(held), name="session-unlock")
            _UNLOCKING.add(task)
            task.add_done_callback(_UNLOCKING.discard)
        else:
            self._local.release()

    async def _unlock(self, held: AbstractAsyncContextManager[None]) -> None:
        try:
            await held.__aexit__(None, None, None)
        finally:
            self._local.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        held, self._held = self._held, None
        if held is None:
            self._local.release()
            return
        try:
            await held.__aexit__(None, None, None)
        finally:
            self._local.release()


# Database unlocks under way (runs release their session lock synchronously).
_UNLOCKING: set[asyncio.Task[None]] = set()


class SessionStore:
    """Transcripts by (principal, session key), plus a lock per stored key.

    Every method takes the key as the client named it and the principal asking;
    ``principal=None`` (in-process callers) counts as the main secret's ``default``.
    """

    def __init__(self, store: Store, *, main_session_principal: str = DEFAULT_PRINCIPAL,
                 api_key_names: frozenset[str] = frozenset(), config_path: str = "plugins.toml") -> None:
        self.store = store
        self._locks: weakref.WeakValueDictionary[str, SessionLock] = weakref.WeakValueDictionary()
        # Principals whose main-session keys mean the real main session.
        self._main_principals = {main_session_principal} if main_session_principal else set()
        self._api_key_names = api_key_names
        self._config_path = config_path
        # Statuses of items about to be appended, by item id (see note_status).
        self._statuses: dict[str, str] = {}

    async def open(self) -> None:
        """Bring the kernel's tables up to date (a no-op once the kernel migrated at startup)."""
        await migrate(self.store, [KERNEL_SCHEMA])

    def allow_main_session(self, principal: str) -> None:
        """Let an in-process principal (a plugin's, e.g. ``hooks``) reach the real main session.

        The name must not also be an API key's, or that key's clients would share the
        plugin's sessions: a clash is a configuration error, raised at startup.
        """
        if principal in self._api_key_names:
            raise ConfigError(
                f"{self._config_path}: [kernel.auth.keys.{principal}] the name {principal!r} is reserved "
                "for a plugin's own sessions; rename the key"
            )
        self._main_principals.add(principal)

    def scoped(self, principal: str | None, key: str) -> str:
        """The stored key for ``key`` as ``principal`` named it.

        The main secret's keys are stored as given, so a single-key deployment keeps
        the transcripts it wrote before sessions were scoped; every other principal's
        are prefixed with its name. A main-session key is the real main session only
        for the principals allowed it; for anyone else it is prefixed too, even for
        ``default``, so it can never reach the main session by its bare name.
        """
        owner = principal or DEFAULT_PRINCIPAL
        if is_main_session_key(key):
            if owner in self._main_principals:
                return key
            return f"{owner}{NAMESPACE_SEPARATOR}{key}"
        if owner == DEFAULT_PRINCIPAL:
            return key
        return f"{owner}{NAMESPACE_SEPARATOR}{key}"

    def lock(self, key: str, *, principal: str | None = None) -> SessionLock:
        """The lock that serialises runs on ``key`` (kept while anyone holds a reference);
        across every process on the database when it is shared (PostgreSQL)."""
        stored = self.scoped(principal, key)
        lock = self._locks.get(stored)
        if lock is None:
            lock = SessionLock(self.store, stored)
            self._locks[stored] = lock
        return lock

    async def load(self, key: str, *, principal: str | None = None) -> list[Item]:
        """The whole transcript, oldest first."""
        rows = await self.store.fetchall(
            "SELECT item FROM session_items WHERE session_key = ? ORDER BY seq", (self.scoped(principal, key),)
        )
        return [item_from_dict(json.loads(r["item"])) for r in rows]

    async def append(self, key: str, items: list[Item], *, principal: str | None = None) -> list[str]:
        """Add items at the end of the transcript, atomically; returns their ids.

        An item keeps its own ``id`` unless the session already holds that id (ids are
        unique per session); one without gets a fresh ``item_`` id. Statuses noted
        with :meth:`note_status` are stored with their items.
        """
        if not items:
            return []
        async with self.store.transaction("sessions", len(items)) as db:
            return await append_rows(db, self.scoped(principal, key), items, self._statuses)

    def note_status(self, item_id: str, status: str) -> None:
        """Remember the status of an item a run is about to append (e.g. ``incomplete`` for the
        item a cancel cut short); :meth:`append` stores it with the item and forgets it."""
        self._statuses[item_id] = status
        while len(self._statuses) > MAX_NOTED_STATUSES:  # never appended (a failed save): drop the oldest
            self._statuses.pop(next(iter(self._statuses)))

    async def clear(self, key: str, *, principal: str | None = None) -> None:
        """Forget the transcript."""
        await self.store.execute("DELETE FROM session_items WHERE session_key = ?", (self.scoped(principal, key),))


async def append_rows(db: Transaction, stored_key: str, items: list[Item],
                      statuses: dict[str, str] | None = None) -> list[str]:
    """Insert ``items`` at the end of a stored key's transcript inside an open transaction."""
    # Appends to one transcript take turns (across processes on PostgreSQL): the next
    # position is read and taken in one step.
    await db.lock(stored_key)
    row = await db.fetchone("SELECT COALESCE(MAX(seq), -1) FROM session_items WHERE session_key = ?", (stored_key,))
    assert row is not None
    start = int(row[0]) + 1
    wanted = [getattr(item, "id", None) for item in items]
    taken: set[str] = set()
    given = [item_id for item_id in wanted if item_id]
    if given:
        marks = ",".join("?" * len(given))
        rows = await db.fetchall(f"SELECT item_id FROM session_items WHERE session_key = ? AND item_id IN ({marks})",
                                 (stored_key, *given))
        taken = {r[0] for r in rows}
    ids: list[str] = []
    for item_id in wanted:
        if not item_id or item_id in taken:
            item_id = new_item_id()
        taken.add(item_id)
        ids.append(item_id)
    now = time.time()
    noted = statuses if statuses is not None else {}
    await db.executemany(
        "INSERT INTO session_items (session_key, seq, item, created_at, item_id, status) VALUES (?, ?, ?, ?, ?, ?)",
        [(stored_key, start + i, json.dumps(item_to_dict(it)), now, ids[i], noted.pop(wanted[i] or "", None))
         for i, it in enumerate(items)],
    )
    await db.execute("UPDATE session_meta SET updated_at = ? WHERE session_key = ?", (now, stored_key))
    return ids


def new_item_id() -> str:
    """A fresh id for an item that came without one."""
    return "item_" + uuid.uuid4().hex
