"""The response store on the kernel's :class:`kernel.store.Store` (SQLite or PostgreSQL, one SQL)."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from kernel.store import Migration, Schema, Store, Transaction, migrate
from plugins.openresponses.storage.base import (
    ChainLink,
    InputItemsPage,
    Order,
    ResponsePage,
    ResponseRecord,
    Salvage,
    StoredEvent,
)
from plugins.openresponses.storage.damaged import DamagedRecordError, failed_resource, loads, report


async def _model_input_column(tx: Transaction) -> None:
    """A SQLite file made before chaining kept the model's view lacks ``model_input``."""
    if tx.dialect != "sqlite":
        return
    columns = {row["name"] for row in await tx.fetchall("PRAGMA table_info(or_responses)")}
    if "model_input" not in columns:
        await tx.execute("ALTER TABLE or_responses ADD COLUMN model_input TEXT NOT NULL DEFAULT '[]'")



async def _agent_column(tx: Transaction) -> None:
    """The agent that answered, for the operator listing's filter (added with the console).

    PostgreSQL also gets ``seq``, an insert-ordered number: the listing breaks ties between
    responses of the same second by insert order, which SQLite's ``rowid`` gives for free.
    """
    if tx.dialect == "postgresql":
        await tx.execute("ALTER TABLE or_responses ADD COLUMN IF NOT EXISTS agent TEXT NOT NULL DEFAULT ''")
        await tx.execute("ALTER TABLE or_responses ADD COLUMN IF NOT EXISTS seq BIGSERIAL")
        return
    columns = {row["name"] for row in await tx.fetchall("PRAGMA table_info(or_responses)")}
    if "agent" not in columns:
        await tx.execute("ALTER TABLE or_responses ADD COLUMN agent TEXT NOT NULL DEFAULT ''")


SCHEMA = Schema("openresponses", (
    Migration(1, "stored responses, input items, event logs, item references", (
        """CREATE TABLE IF NOT EXISTS or_responses (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            previous_response_id TEXT,
            status TEXT NOT NULL,
            stored INTEGER NOT NULL,
            background INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            resource TEXT NOT NULL,
            output_items TEXT NOT NULL,
            model_input TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX IF NOT EXISTS or_responses_created ON or_responses (created_at)",
        "CREATE INDEX IF NOT EXISTS or_responses_status ON or_responses (status)",
        """CREATE TABLE IF NOT EXISTS or_input_items (
            response_id TEXT NOT NULL REFERENCES or_responses (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            item TEXT NOT NULL,
            PRIMARY KEY (response_id, position)
        )""",
        """CREATE TABLE IF NOT EXISTS or_events (
            response_id TEXT NOT NULL REFERENCES or_responses (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (response_id, seq)
        )""",
        # Ids of the items a response holds (its input as the model saw it, and its output),
        # so item_reference inputs find a stored item without scanning every response.
        """CREATE TABLE IF NOT EXISTS or_item_refs (
            item_id TEXT NOT NULL,
            response_id TEXT NOT NULL REFERENCES or_responses (id) ON DELETE CASCADE
        )""",
        "CREATE INDEX IF NOT EXISTS or_item_refs_item ON or_item_refs (item_id)",
        "CREATE INDEX IF NOT EXISTS or_item_refs_response ON or_item_refs (response_id)",
    )),
    Migration(2, "stored responses: the model's input (chaining)", (_model_input_column,)),
    Migration(3, "stored responses: the agent, and an index for the owner's listing", (
        _agent_column,
        "CREATE INDEX IF NOT EXISTS or_responses_owner_created ON or_responses (owner, created_at)",
    )),
    Migration(4, "stored responses: the process running each (its lease)", (
        "ALTER TABLE or_responses ADD COLUMN instance_id TEXT NOT NULL DEFAULT ''",
    )),
))

_COLUMNS = ("id, owner, previous_response_id, status, stored, background, created_at, updated_at, resource, "
            "output_items, model_input, agent, instance_id")
_ACTIVE = ("queued", "in_progress")
# Notified (payload: the response id) when a response's events or final state are written.
CHANNEL = "or_events"
# Notified (payload: the response id) to cancel a background run in whichever process runs it.
CANCEL_CHANNEL = "or_cancel"
# Responses deleted per transaction by a retention sweep.
EXPIRE_BATCH = 500
_REASON = "not_stored_reason"  # a tombstone's resource column holds only why it is one
# A tombstone's status: final, so retention expires it like any finished response (a
# tombstone is never updated, so an "in_progress" one would be kept forever).
TOMBSTONE_STATUS = "not_stored"


def _dumps(value: Any) -> str:
    """Compact JSON text. orjson writes it several times faster (every streamed event of a
    stored response passes here); what it refuses (a lone surrogate, an integer beyond
    64 bits, a non-string key) goes through :mod:`json` as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _item_ids(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["id"]) for item in items if item.get("id")]


def _record(row: Any, input_items: list[dict[str, Any]] | None = None) -> ResponseRecord:
    stored = bool(row["stored"])
    status = row["status"]
    try:
        resource = loads(row["resource"])
        output_items = loads(row["output_items"])
        model_input = loads(row["model_input"])
    except DamagedRecordError as exc:
        report(row["id"], str(exc))
        resource = failed_resource(row["id"], row["created_at"], row["previous_response_id"], str(exc))
        status, output_items, model_input, input_items = "failed", [], [], []
        stored = True
    return ResponseRecord(
        id=row["id"],
        owner=row["owner"],
        previous_response_id=row["previous_response_id"],
        status=status,
        stored=stored,
        background=bool(row["background"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resource=resource if stored else {},
        output_items=output_items,
        input_items=input_items or [],
        model_input=model_input,
        not_stored_reason=None if stored else resource.get(_REASON),
        agent=row["agent"],
    )


def _item(text: str, response_id: str) -> Any:
    """One stored item or event; a damaged one is left out (and logged once)."""
    try:
        return loads(text)
    except DamagedRecordError as exc:
        report(response_id, f"an item or event: {exc}")
        return None


def _link(row: Any) -> ChainLink:
    stored = bool(row["stored"])
    try:
        return ChainLink(
            id=row["id"], status=row["status"], stored=stored, model_input=loads(row["model_input"]),
            output_items=loads(row["output_items"]),
            not_stored_reason=None if stored else loads(row["resource"]).get(_REASON),
        )
    except DamagedRecordError as exc:
        report(row["id"], str(exc))
        return ChainLink(id=row["id"], status="failed", stored=True, model_input=[], output_items=[],
                         damaged=str(exc))


def _rows(record: ResponseRecord, now: float) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[str, str]]]:
    """The rows one new record takes: its response row, input item rows and item references."""
    if record.stored:
        resource, output = _dumps(record.resource), _dumps(record.output_items)
        model_input = _dumps(record.model_input)
        inputs = [(record.id, i, str(item.get("id", f"{record.id}_in_{i}")), _dumps(item))
                  for i, item in enumerate(record.input_items)]
        refs = [(item_id, record.id) for item_id in _item_ids(record.model_input) + _item_ids(record.output_items)]
    else:
        reason = {_REASON: record.not_stored_reason} if record.not_stored_reason else {}
        resource, output, model_input, inputs, refs = _dumps(reason), "[]", "[]", [], []
    status = record.status if record.stored else TOMBSTONE_STATUS
    response = (record.id, record.owner, record.previous_response_id, status, int(record.stored),
                int(record.background), record.created_at, now, resource, output, model_input, record.agent,
                record.instance_id)
    return response, inputs, refs


class SqlResponseStore:
    """:class:`~plugins.openresponses.storage.base.ResponseStore` on the kernel's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def shared(self) -> bool:
        """True when other processes read this database (see kernel.store.Store.shared)."""
        return self.store.shared

    async def open(self) -> None:
        """Bring the tables up to date (a no-op once the kernel migrated them at startup)."""
        await migrate(self.store, [SCHEMA])

    async def owner(self, response_id: str) -> str | None:
        row = await self.store.fetchone("SELECT owner FROM or_responses WHERE id = ?", (response_id,))
        return row["owner"] if row is not None else None

    async def list_page(self, owner: str | None, *, limit: int, after: str | None, agent: str | None,
                        status: str | None) -> ResponsePage:
        where, params = ["stored = 1"], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if agent:
            where.append("agent = ?")
            params.append(agent)
        if status:
            where.append("status = ?")
            params.append(status)
        # Newest first. created_at has whole seconds: the insert order breaks ties (SQLite's
        # rowid, PostgreSQL's seq column).
        tie = "rowid" if self.store.dialect == "sqlite" else "seq"
        if after:
            cursor = await self.store.fetchone(f"SELECT created_at, {tie} AS tie FROM or_responses WHERE id = ?",
                                               (after,))
            if cursor is None:
                return ResponsePage([], has_more=False, cursor_found=False)
            where.append(f"(created_at < ? OR (created_at = ? AND {tie} < ?))")
            params += [cursor["created_at"], cursor["created_at"], cursor["tie"]]
        rows = await self.store.fetchall(
            f"SELECT {_COLUMNS} FROM or_responses WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, {tie} DESC LIMIT ?", (*params, limit + 1))
        records = [_record(row) for row in rows[:limit]]
        return ResponsePage(records, has_more=len(rows) > limit)

    async def create(self, record: ResponseRecord) -> int:
        return (await self.create_many([record]))[0]

    async def create_many(self, records: list[ResponseRecord]) -> list[int]:
        rows = [_rows(record, time.time()) for record in records]
        async with self.store.transaction("responses", len(records)) as db:
            await db.executemany(
                f"INSERT INTO or_responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [response for response, _, _ in rows],
            )
            inputs = [row for _, record_inputs, _ in rows for row in record_inputs]
            if inputs:
                await db.executemany(
                    "INSERT INTO or_input_items (response_id, position, item_id, item) VALUES (?, ?, ?, ?)", inputs
                )
            refs = [ref for _, _, record_refs in rows for ref in record_refs]
            if refs:
                await db.executemany("INSERT INTO or_item_refs (item_id, response_id) VALUES (?, ?)", refs)
        return [sum(len(v) for v in response[8:11]) + sum(len(i[3]) for i in record_inputs)
                for response, record_inputs, _ in rows]

    async def update(
        self, response_id: str, *, status: str, resource: dict[str, Any], output_items: list[dict[str, Any]]
    ) -> int:
        resource_json, output_json = _dumps(resource), _dumps(output_items)
        async with self.store.transaction() as db:
            changed = await db.execute(
                "UPDATE or_responses SET status = ?, resource = ?, output_items = ?, updated_at = ? "
                "WHERE id = ? AND stored = 1",
                (status, resource_json, output_json, time.time(), response_id),
            )
            if changed:
                await db.executemany(
                    "INSERT INTO or_item_refs (item_id, response_id) VALUES (?, ?)",
                    [(item_id, response_id) for item_id in _item_ids(output_items)],
                )
            await db.notify(CHANNEL, response_id)
        return len(resource_json) + len(output_json)

    async def append_events(self, response_id: str, events: list[StoredEvent]) -> int:
        return (await self.append_events_many([(response_id, events)]))[0]

    async def append_events_many(self, logs: list[tuple[str, list[StoredEvent]]]) -> list[int]:
        per_log = [[(response_id, e.sequence_number, _dumps(e.data)) for e in events] for response_id, events in logs]
        rows = [row for log_rows in per_log for row in log_rows]
        if rows:
            async with self.store.transaction("events", len(rows)) as db:
                await db.executemany(
                    "INSERT INTO or_events (response_id, seq, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows)
                for response_id in dict.fromkeys(response_id for (response_id, events) in logs if events):
                    await db.notify(CHANNEL, response_id)
        return [sum(len(row[2]) for row in log_rows) for log_rows in per_log]

    async def events_after(self, response_id: str, after: int) -> list[StoredEvent]:
        rows = await self.store.fetchall(
            "SELECT seq, data FROM or_events WHERE response_id = ? AND seq > ? ORDER BY seq", (response_id, after)
        )
        return [StoredEvent(r["seq"], data) for r in rows if (data := _item(r["data"], response_id)) is not None]

    async def get(self, response_id: str, owner: str) -> ResponseRecord | None:
        row = await self.store.fetchone(
            f"SELECT {_COLUMNS} FROM or_responses WHERE id = ? AND owner = ?", (response_id, owner)
        )
        return _record(row) if row is not None else None

    async def chain(self, response_id: str, owner: str) -> list[ResponseRecord]:
        # One recursive query walks the links: cost grows with the chain's own length only.
        rows = await self.store.fetchall(
            f"""WITH RECURSIVE chain(id, prev, depth) AS (
                    SELECT id, previous_response_id, 0 FROM or_responses WHERE id = ? AND owner = ?
                    UNION ALL
                    SELECT r.id, r.previous_response_id, c.depth + 1
                    FROM or_responses r JOIN chain c ON r.id = c.prev
                    WHERE r.owner = ?
                )
                SELECT {", ".join("r." + c.strip() for c in _COLUMNS.split(","))}, c.depth AS depth
                FROM chain c JOIN or_responses r ON r.id = c.id
                ORDER BY c.depth DESC""",
            (response_id, owner, owner),
        )
        if not rows:
            return []
        items: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        item_rows = await self.store.fetchall(
            """WITH RECURSIVE chain(id, prev) AS (
                    SELECT id, previous_response_id FROM or_responses WHERE id = ? AND owner = ?
                    UNION ALL
                    SELECT r.id, r.previous_response_id FROM or_responses r JOIN chain c ON r.id = c.prev
                    WHERE r.owner = ?
                )
                SELECT i.response_id, i.item FROM or_input_items i JOIN chain c ON i.response_id = c.id
                ORDER BY i.response_id, i.position""",
            (response_id, owner, owner),
        )
        for r in item_rows:
            if (item := _item(r["item"], r["response_id"])) is not None:
                items[r["response_id"]].append(item)
        return [_record(r, items[r["id"]]) for r in rows]

    async def history(self, response_id: str, owner: str) -> list[ChainLink]:
        # One recursive query over the primary key: cost grows with this chain's length only.
        rows = await self.store.fetchall(
            """WITH RECURSIVE chain(id, prev, depth) AS (
                    SELECT id, previous_response_id, 0 FROM or_responses WHERE id = ? AND owner = ?
                    UNION ALL
                    SELECT r.id, r.previous_response_id, c.depth + 1
                    FROM or_responses r JOIN chain c ON r.id = c.prev
                    WHERE r.owner = ?
                )
                SELECT r.id, r.status, r.stored, r.model_input, r.output_items, r.resource
                FROM chain c JOIN or_responses r ON r.id = c.id
                ORDER BY c.depth DESC""",
            (response_id, owner, owner),
        )
        return [_link(r) for r in rows]

    async def find_item(self, item_id: str, owner: str) -> ChainLink | None:
        row = await self.store.fetchone(
            """SELECT r.id, r.status, r.stored, r.model_input, r.output_items, r.resource
                FROM or_item_refs i JOIN or_responses r ON r.id = i.response_id
                WHERE i.item_id = ? AND r.owner = ? AND r.stored = 1
                ORDER BY r.created_at DESC LIMIT 1""",
            (item_id, owner),
        )
        return _link(row) if row is not None else None

    async def discard(self, response_id: str, reason: str) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE or_responses SET stored = 0, status = ?, resource = ?, output_items = '[]', "
                "model_input = '[]', updated_at = ? WHERE id = ?",
                (TOMBSTONE_STATUS, _dumps({_REASON: reason}), time.time(), response_id),
            )
            for table in ("or_input_items", "or_events", "or_item_refs"):
                await db.execute(f"DELETE FROM {table} WHERE response_id = ?", (response_id,))
            await db.notify(CHANNEL, response_id)

    async def delete(self, response_id: str, owner: str) -> bool:
        async with self.store.transaction() as db:
            return await db.execute("DELETE FROM or_responses WHERE id = ? AND owner = ?", (response_id, owner)) > 0

    async def input_item(self, response_id: str, item_id: str) -> dict[str, Any] | None:
        row = await self.store.fetchone(
            "SELECT item FROM or_input_items WHERE response_id = ? AND item_id = ? ORDER BY position LIMIT 1",
            (response_id, item_id),
        )
        return _item(row["item"], response_id) if row is not None else None

    async def input_items(
        self, response_id: str, owner: str, *, limit: int, order: Order, after: str | None
    ) -> InputItemsPage | None:
        record = await self.get(response_id, owner)
        if record is None or not record.stored:
            return None
        direction = "ASC" if order == "asc" else "DESC"
        cursor_sql, params = "", [response_id]
        if after is not None:
            pos = await self.store.fetchone(
                "SELECT position FROM or_input_items WHERE response_id = ? AND item_id = ?", (response_id, after)
            )
            if pos is None:
                return InputItemsPage([], False)
            cursor_sql = " AND position > ?" if order == "asc" else " AND position < ?"
            params.append(pos["position"])
        rows = await self.store.fetchall(
            f"SELECT item FROM or_input_items WHERE response_id = ?{cursor_sql} ORDER BY position {direction} LIMIT ?",
            (*params, limit + 1),
        )
        data = [item for r in rows if (item := _item(r["item"], response_id)) is not None]
        return InputItemsPage(data[:limit], len(data) > limit)

    async def expire(self, older_than: float, batch: int = EXPIRE_BATCH) -> int:
        # In batches, each its own short transaction: a large backlog (a first sweep after
        # a long downtime, a lowered retention) never holds the write lock for long, so
        # requests storing responses meanwhile are not stalled behind it.
        removed = 0
        while True:
            async with self.store.transaction() as db:
                count = await db.execute(
                    f"DELETE FROM or_responses WHERE id IN (SELECT id FROM or_responses WHERE created_at < ? "
                    f"AND status NOT IN ({', '.join('?' * len(_ACTIVE))}) LIMIT ?)",
                    (older_than, *_ACTIVE, batch),
                )
            removed += count
            if count < batch:
                return removed

    async def fail_interrupted(self, message: str, salvage: Salvage | None = None, *,
                               orphaned: tuple[str, tuple[Any, ...]] | None = None) -> int:
        where = f"status IN ({', '.join('?' * len(_ACTIVE))}) AND stored = 1"
        extra: tuple[Any, ...] = ()
        if orphaned is not None:
            where += f" AND {orphaned[0]}"
            extra = orphaned[1]
        rows = await self.store.fetchall(
            f"SELECT id, resource, created_at, previous_response_id FROM or_responses WHERE {where}",
            (*_ACTIVE, *extra),
        )
        now = time.time()
        updates = []
        for row in rows:
            try:
                resource = loads(row["resource"])
            except DamagedRecordError as exc:
                report(row["id"], str(exc))
                damaged = failed_resource(row["id"], row["created_at"], row["previous_response_id"], str(exc))
                updates.append((_dumps(damaged), "[]", now, row["id"], *_ACTIVE))
                continue
            resource["status"] = "failed"
            resource["error"] = {"code": "server_error", "message": message, "type": "server_error", "param": None}
            if salvage is not None:
                resource["output"] = salvage([e.data for e in await self.events_after(row["id"], -1)])
            updates.append((_dumps(resource), _dumps(resource.get("output") or []), now, row["id"], *_ACTIVE))
        async with self.store.transaction() as db:
            # Still active: a run that finished meanwhile keeps its own final state.
            await db.executemany(
                "UPDATE or_responses SET status = 'failed', resource = ?, output_items = ?, updated_at = ? "
                f"WHERE id = ? AND status IN ({', '.join('?' * len(_ACTIVE))})",
                updates,
            )
            for update in updates:
                await db.notify(CHANNEL, update[3])  # followers in other processes end their streams
            # Tombstones written as "in_progress" by an earlier version would never expire.
            await db.execute(
                f"UPDATE or_responses SET status = '{TOMBSTONE_STATUS}', updated_at = ? "
                f"WHERE stored = 0 AND status IN ({', '.join('?' * len(_ACTIVE))})",
                (now, *_ACTIVE),
            )
        return len(rows)
