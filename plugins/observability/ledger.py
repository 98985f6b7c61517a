"""The usage ledger's table and its reads, in the kernel store's portable SQL.

One schema for both backends (SQLite and PostgreSQL), declared as a versioned
migration (``register_migrations``). The UTC day of a row is computed in Python when
it is written (the ``day`` column), so grouping by day needs no date function of
either database. The server's ``GET /-/usage`` and the offline ``kernel usage`` read
through the same functions.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from kernel.store import Migration, Schema, Store, Transaction
from plugins.observability import quota_store

GroupBy = Literal["principal", "day", "agent", "model"]

# group_by -> the column of the second grouping (never client text: the key is checked first).
GROUP_COLUMNS: dict[str, str] = {"principal": "principal", "day": "day", "agent": "agent", "model": "model"}

COLUMNS = ("finished_at", "day", "runs", "principal", "agent", "provider", "model", "status", "input_tokens",
           "output_tokens")
INSERT = f"INSERT INTO usage_runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"

_TABLE = """CREATE TABLE IF NOT EXISTS usage_runs (
    finished_at DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    runs INTEGER NOT NULL,
    principal TEXT NOT NULL,
    agent TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL
)"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS usage_runs_by_principal ON usage_runs (principal, finished_at)",
    "CREATE INDEX IF NOT EXISTS usage_runs_by_time ON usage_runs (finished_at)",
)
_LEGACY_COLUMNS = ("finished_at", "runs", "principal", "agent", "provider", "model", "status", "input_tokens",
                   "output_tokens")


def day_of(unix_day: int) -> str:
    """``YYYY-MM-DD`` (UTC) of a day number (Unix seconds // 86400)."""
    return time.strftime("%Y-%m-%d", time.gmtime(unix_day * 86400))


async def _columns(tx: Transaction, table: str) -> set[str]:
    if tx.dialect == "sqlite":
        return {row["name"] for row in await tx.fetchall(f"PRAGMA table_info({table})")}
    rows = await tx.fetchall("SELECT column_name AS name FROM information_schema.columns "
                             "WHERE table_schema = current_schema() AND table_name = ?", (table,))
    return {row["name"] for row in rows}


async def _create_ledger(tx: Transaction) -> None:
    """The table; a ledger made before migrations (no ``day`` column) is rebuilt, rows kept."""
    legacy = await _columns(tx, "usage_runs")
    if legacy and "day" not in legacy:
        await tx.execute("ALTER TABLE usage_runs RENAME TO usage_runs_legacy")
        await tx.execute(_TABLE)
        rows = await tx.fetchall(f"SELECT {', '.join(_LEGACY_COLUMNS)} FROM usage_runs_legacy")
        await tx.executemany(INSERT, [
            (float(r["finished_at"]), day_of(int(float(r["finished_at"]) // 86400)),
             *(r[c] for c in _LEGACY_COLUMNS[1:])) for r in rows])
        await tx.execute("DROP TABLE usage_runs_legacy")  # its indexes go with it; new ones follow
    else:
        await tx.execute(_TABLE)
    for statement in _INDEXES:
        await tx.execute(statement)


SCHEMA = Schema("observability", (
    Migration(1, "usage ledger (usage_runs)", (_create_ledger,)),
    Migration(2, "per-key limits shared by processes (quota_keys, quota_slots)", quota_store.TABLES),
))


def where(principal: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """The WHERE clause (``?`` placeholders) and parameters of a usage query."""
    clauses: list[str] = []
    params: list[Any] = []
    if principal is not None:
        clauses.append("principal = ?")
        params.append(principal)
    if since is not None:
        clauses.append("finished_at >= ?")
        params.append(float(since))
    if until is not None:
        clauses.append("finished_at < ?")
        params.append(float(until))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


async def summarise(store: Store, *, principal: str | None, since: float | None, until: float | None,
                    group_by: GroupBy) -> list[dict[str, Any]]:
    """Runs and tokens per principal (and per day, agent or model), oldest group first."""
    clause, params = where(principal, since, until)
    column = GROUP_COLUMNS[group_by]
    grouping = "principal" if column == "principal" else f"principal, {column}"
    rows = await store.fetchall(
        f"SELECT principal, {column} AS grp, SUM(runs) AS runs, SUM(input_tokens) AS input_tokens, "
        f"SUM(output_tokens) AS output_tokens FROM usage_runs {clause} GROUP BY {grouping} "
        f"ORDER BY {column}, principal", params)
    return [summary_row(row, group_by) for row in rows]


async def tokens_since(store: Store, principal: str, since: float) -> int:
    """Input + output tokens ``principal`` used since ``since``."""
    row = await store.fetchone(
        "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS total FROM usage_runs "
        "WHERE principal = ? AND finished_at >= ?", (principal, float(since)))
    return int(row["total"]) if row is not None else 0


async def has_ledger(store: Store) -> bool:
    """Whether the ledger's migration was applied to this store (the plugin ever ran on it)."""
    if store.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_runs'"
    else:
        sql = "SELECT 1 WHERE to_regclass('usage_runs') IS NOT NULL"
    return await store.fetchone(sql) is not None


def summary_row(row: Any, group_by: GroupBy) -> dict[str, Any]:
    """One answer row: the group, runs and tokens (sums as ints on both backends)."""
    out: dict[str, Any] = {"principal": row["principal"]}
    if group_by != "principal":
        out[group_by] = row["grp"]
    input_tokens, output_tokens = int(row["input_tokens"] or 0), int(row["output_tokens"] or 0)
    out.update(runs=int(row["runs"]), input_tokens=input_tokens, output_tokens=output_tokens,
               total_tokens=input_tokens + output_tokens)
    return out
