"""Per-key limits counted in a PostgreSQL store shared by several processes: the tables
and the statements (see :mod:`plugins.observability.shared_quotas` for when each runs).

One row per limited key in ``quota_keys`` holds everything that must change atomically:
both token buckets (``level`` at time ``at``, refilled on read exactly as
:class:`plugins.observability.quotas.Bucket` does, in the same IEEE double arithmetic),
the number of runs in progress (``active``) and the budget counter of the current period.
``version`` grows with every write, so a process keeps the newest answer it has seen.
Each statement is one round trip: a decision and its write are one SQL statement on
that row (PostgreSQL serialises writers of one row; the statement that decides reads
the row ``FOR UPDATE`` first, so it decides on the newest committed values).

A concurrency slot is also a row of ``quota_slots`` naming the process (``instance_id``,
its lease in ``kernel_instances``: :mod:`kernel.store.leases`) that holds it, so a process
that dies with runs in progress has its slots freed by the housekeeping leader once its
lease has expired (:func:`free_slots`, a lease reaper).

The statements are PostgreSQL's (``$n`` parameters, ``GREATEST``/``LEAST``, ``FOR
UPDATE``): on SQLite there is one process, and limits stay in memory (``Quotas``). The
tables are created on both backends by the plugin's migration 2, so a store can move.
"""

from __future__ import annotations

from typing import Any

from kernel.store import Store

KEYS_TABLE = """CREATE TABLE IF NOT EXISTS quota_keys (
    principal TEXT PRIMARY KEY,
    requests_level DOUBLE PRECISION,
    requests_at DOUBLE PRECISION,
    tokens_level DOUBLE PRECISION,
    tokens_at DOUBLE PRECISION,
    active INTEGER NOT NULL DEFAULT 0,
    budget_period TEXT NOT NULL DEFAULT '',
    budget_used BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0
)"""
SLOTS_TABLE = """CREATE TABLE IF NOT EXISTS quota_slots (
    slot_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL
)"""
TABLES = (KEYS_TABLE, SLOTS_TABLE, "CREATE INDEX IF NOT EXISTS quota_slots_by_instance ON quota_slots (instance_id)")
# The answer of every statement on the request path. Selecting set_config(..., true) makes
# this statement's own (implicit) transaction commit without waiting for the WAL flush:
# that wait was about 160 of the 280 us of a write here, and a database crash losing
# the last fraction of a second of quota counts is harmless (nothing else is written).
ANSWER = " SELECT upd.*, set_config('synchronous_commit', 'off', true) AS async_commit FROM upd"


class Params:
    """``$n`` placeholders, each value bound once however often the statement uses it."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._named: dict[str, str] = {}

    def __call__(self, name: str, value: Any, cast: str) -> str:
        found = self._named.get(name)
        if found is None:
            self.values.append(value)
            found = self._named[name] = f"${len(self.values)}::{cast}"
        return found


def refilled(kind: str, cap: str, rate: str, now: str, row: str = "") -> str:
    """SQL for bucket ``kind``'s level at ``now``: ``Bucket.available`` (a row never used is full)."""
    level, at = f"COALESCE({row}{kind}_level, {cap})", f"COALESCE({row}{kind}_at, {now})"
    return f"LEAST({cap}, CASE WHEN {now} > {at} THEN {level} + ({now} - {at}) * {rate} ELSE {level} END)"


def _take(p: Params, kind: str, capacity: int, amount: float, now_value: float) -> list[str]:
    """SET clauses charging ``amount`` to bucket ``kind`` (``Bucket.take``; negative gives back)."""
    now = p("now", now_value, "float8")
    cap, rate = p(f"{kind}_cap", float(capacity), "float8"), p(f"{kind}_rate", capacity / 60.0, "float8")
    return [f"{kind}_level = LEAST({cap}, {refilled(kind, cap, rate, now)} - {p(f'{kind}_amount', amount, 'float8')})",
            f"{kind}_at = GREATEST(COALESCE({kind}_at, {now}), {now})"]


async def ensure(store: Store, principal: str, budget_period: str, budget_seed: int) -> None:
    """The key's row (full buckets). With a budget, a row whose period is over (or that never
    had one) restarts it at ``budget_seed``, the tokens the usage ledger has for the period."""
    if budget_period:
        await store.fetchone(
            "INSERT INTO quota_keys (principal, budget_period, budget_used) VALUES ($1, $2, $3) "
            "ON CONFLICT (principal) DO UPDATE SET budget_period = excluded.budget_period, "
            "budget_used = excluded.budget_used, version = quota_keys.version + 1 "
            "WHERE quota_keys.budget_period < excluded.budget_period", (principal, budget_period, budget_seed))
    else:
        await store.fetchone("INSERT INTO quota_keys (principal) VALUES ($1) ON CONFLICT (principal) DO NOTHING",
                             (principal,))


async def read(store: Store, principal: str) -> Any | None:
    """The key's row as committed."""
    return await store.fetchone("SELECT * FROM quota_keys WHERE principal = $1", (principal,))


async def count_request(store: Store, principal: str, now: float, requests_per_minute: int | None,
                        claim_below: int | None, slot: str, instance_id: str) -> Any | None:
    """One request's round trip: take one from the requests bucket if one is left, and (when
    ``claim_below`` is set and the request passed) claim a concurrency slot if fewer than
    ``claim_below`` runs are in progress. Returns the row with ``request_ok`` and ``claimed``."""
    p = Params()
    key, at = p("principal", principal, "text"), p("now", now, "float8")
    columns, sets, ok, claimed = ["principal", "active"], ["version = q.version + 1"], "TRUE", "FALSE"
    if requests_per_minute is not None:
        cap = p("requests_cap", float(requests_per_minute), "float8")
        rate = p("requests_rate", requests_per_minute / 60.0, "float8")
        columns.append(f"{refilled('requests', cap, rate, at)} AS r")
        ok = "pre.r >= 1"
        sets += [f"requests_level = CASE WHEN {ok} THEN LEAST({cap}, pre.r - 1) ELSE pre.r END",
                 f"requests_at = GREATEST(COALESCE(q.requests_at, {at}), {at})"]
    if claim_below is not None:
        claimed = f"({ok} AND pre.active < {p('claim_below', claim_below, 'int4')})"
        sets.append(f"active = q.active + CASE WHEN {claimed} THEN 1 ELSE 0 END")
    sql = (f"WITH cur AS (SELECT * FROM quota_keys WHERE principal = {key} FOR UPDATE), "
           f"pre AS (SELECT {', '.join(columns)} FROM cur), "
           f"upd AS (UPDATE quota_keys q SET {', '.join(sets)} FROM pre WHERE q.principal = pre.principal "
           f"RETURNING q.*, {ok} AS request_ok, {claimed} AS claimed)")
    if claim_below is not None:
        sql += (", ins AS (INSERT INTO quota_slots (slot_id, principal, instance_id, claimed_at) "
                f"SELECT {p('slot', slot, 'text')}, {key}, {p('instance', instance_id, 'text')}, {at} "
                "FROM upd WHERE upd.claimed)")
    return await store.fetchone(sql + ANSWER, p.values)


async def charge(store: Store, principal: str, now: float, *, requests: int | None = None,
                 tokens: tuple[int, int] | None = None, budget: tuple[str, int] | None = None,
                 slot: tuple[str, str] | None = None) -> Any | None:
    """Write what a process admitted on its own: one request (``requests`` = the key's
    requests_per_minute), ``tokens`` = (tokens_per_minute, estimate) taken from the bucket,
    ``budget`` = (period, estimate) added to the period's counter, ``slot`` = (slot id,
    instance id) a concurrency slot taken without asking. Unconditional: the check was made."""
    p = Params()  # a value is bound only where it is used (PostgreSQL must infer each one's type)
    key = p("principal", principal, "text")
    sets = ["version = version + 1"]
    if requests is not None:
        sets += _take(p, "requests", requests, 1.0, now)
    if tokens is not None:
        sets += _take(p, "tokens", tokens[0], float(tokens[1]), now)
    if budget is not None:
        period, amount = p("period", budget[0], "text"), p("budget_amount", budget[1], "int8")
        # A period only moves forward: a process whose clock is still in the last one adds nothing.
        sets += [f"budget_used = CASE WHEN budget_period = {period} THEN budget_used + {amount} "
                 f"WHEN budget_period < {period} THEN {amount} ELSE budget_used END",
                 f"budget_period = GREATEST(budget_period, {period})"]
    if slot is not None:
        sets.append("active = active + 1")
    sql = f"WITH upd AS (UPDATE quota_keys SET {', '.join(sets)} WHERE principal = {key} RETURNING *)"
    if slot is not None:
        sql += (", ins AS (INSERT INTO quota_slots (slot_id, principal, instance_id, claimed_at) "
                f"SELECT {p('slot', slot[0], 'text')}, {key}, {p('instance', slot[1], 'text')}, "
                f"{p('now', now, 'float8')} FROM upd)")
    return await store.fetchone(sql + ANSWER, p.values)


async def settle(store: Store, principal: str, now: float, *, slot: str | None = None,
                 tokens: tuple[int, int] | None = None, budget: tuple[str, int] | None = None) -> Any | None:
    """A run ended (or a request ends without using its slot): free ``slot`` (only if its row
    is still there: a lease reaper may have freed it), give back or charge ``tokens`` =
    (tokens_per_minute, actual - estimate), and correct ``budget`` = (period, actual - estimate)
    if that period is still the current one."""
    p = Params()
    key = p("principal", principal, "text")
    sets, sql = ["version = version + 1"], ""
    if slot is not None:
        sql = f"WITH gone AS (DELETE FROM quota_slots WHERE slot_id = {p('slot', slot, 'text')} RETURNING 1), "
        sets.append("active = GREATEST(0, active - (SELECT count(*) FROM gone))")
    if tokens is not None:
        sets += _take(p, "tokens", tokens[0], float(tokens[1]), now)
    if budget is not None:
        period, amount = p("period", budget[0], "text"), p("budget_amount", budget[1], "int8")
        sets.append(f"budget_used = CASE WHEN budget_period = {period} THEN GREATEST(0, budget_used + {amount}) "
                    "ELSE budget_used END")
    sql = (sql or "WITH ") + f"upd AS (UPDATE quota_keys SET {', '.join(sets)} WHERE principal = {key} RETURNING *)"
    return await store.fetchone(sql + ANSWER, p.values)


async def free_slots(store: Store, where: str, params: tuple[Any, ...]) -> int:
    """Delete the slots matching ``where`` (``?`` placeholders, on alias ``s``) and lower
    their keys' counts; returns how many were freed. For a lease reaper (slots of processes
    whose lease expired) and a process stopping (its own)."""
    row = await store.fetchone(
        f"WITH gone AS (DELETE FROM quota_slots s WHERE {where} RETURNING s.principal), "
        "freed AS (SELECT principal, count(*) AS n FROM gone GROUP BY principal), "
        "upd AS (UPDATE quota_keys q SET active = GREATEST(0, q.active - freed.n), version = q.version + 1 "
        "FROM freed WHERE q.principal = freed.principal RETURNING 1) "
        "SELECT (SELECT count(*) FROM gone) AS n", params)
    return int(row["n"]) if row is not None else 0
