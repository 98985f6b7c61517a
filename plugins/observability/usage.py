"""Durable usage per principal, agent, provider, model and run status.

Behind the small :class:`UsageStore` interface so a later shared backend (PostgreSQL)
can replace the SQLite table. Finished runs are summed in memory and written at most
``flush_seconds`` apart, one row per (principal, agent, provider, model, status, UTC
day) with its run count: a row per run cost the store an insert per request (measured
at several percent of an echo request's CPU) and grew the table by a row per run.
A row's time is its first run's, so ``since``/``until`` are exact to ``flush_seconds``
and day and month totals are exact. Reads flush first, so an answer always includes
every finished run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal, NamedTuple, Protocol

from kernel.store import Store

log = logging.getLogger("plugins.observability")

GroupBy = Literal["principal", "day", "agent", "model"]
MAX_MODEL_LENGTH = 200

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS usage_runs (
        finished_at REAL NOT NULL,
        runs INTEGER NOT NULL,
        principal TEXT NOT NULL,
        agent TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS usage_runs_by_principal ON usage_runs (principal, finished_at)",
    "CREATE INDEX IF NOT EXISTS usage_runs_by_time ON usage_runs (finished_at)",
)

# group_by -> the SQL expression of the second grouping column (never client text).
GROUP_COLUMNS: dict[str, str] = {
    "principal": "''",
    "day": "strftime('%Y-%m-%d', finished_at, 'unixepoch')",
    "agent": "agent",
    "model": "model",
}


class UsageRow(NamedTuple):
    """One finished run's usage (a tuple: it goes to executemany as it is)."""

    finished_at: float
    principal: str
    agent: str
    provider: str
    model: str
    status: str
    input_tokens: int
    output_tokens: int


class UsageStore(Protocol):
    """Where usage lives; SQLite today (:class:`SqliteUsageStore`)."""

    async def open(self) -> None: ...

    def record(self, row: UsageRow) -> None:
        """Queue a row (synchronous: called at the end of a run)."""

    async def flush(self) -> None: ...

    async def close(self) -> None: ...

    async def summary(self, *, principal: str | None, since: float | None, until: float | None,
                      group_by: GroupBy) -> list[dict[str, Any]]: ...

    async def tokens_since(self, principal: str, since: float) -> int: ...


class SqliteUsageStore:
    """``usage_runs`` in the kernel's SQLite store, written in batches."""

    def __init__(self, store: Store, flush_seconds: float = 1.0) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        # (principal, agent, provider, model, status, UTC day) -> [first time, runs, input, output]
        self._pending: dict[tuple[str, str, str, str, str, int], list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self.store.ensure_schema(SCHEMA)
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically(), name="usage-flush")

    def record(self, row: UsageRow) -> None:
        key = (row.principal, row.agent, row.provider, row.model, row.status, int(row.finished_at // 86400))
        sums = self._pending.get(key)
        if sums is None:
            self._pending[key] = [row.finished_at, 1, row.input_tokens, row.output_tokens]
        else:
            sums[1] += 1
            sums[2] += row.input_tokens
            sums[3] += row.output_tokens

    async def flush(self) -> None:
        async with self._lock:  # one batch at a time, in order
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            rows = [(at, int(runs), *key[:5], int(tokens_in), int(tokens_out))
                    for key, (at, runs, tokens_in, tokens_out) in batch.items()]
            try:
                async with self.store.transaction("usage", len(rows)) as db:
                    await db.executemany("INSERT INTO usage_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except Exception:
                for key, sums in batch.items():  # kept for the next attempt, nothing lost
                    kept = self._pending.setdefault(key, [sums[0], 0, 0, 0])
                    kept[0] = min(kept[0], sums[0])
                    for i in (1, 2, 3):
                        kept[i] += sums[i]
                raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write %d usage row(s); will retry", len(self._pending))

    async def summary(self, *, principal: str | None, since: float | None, until: float | None,
                      group_by: GroupBy) -> list[dict[str, Any]]:
        """Runs and tokens per principal (and per day, agent or model), oldest group first."""
        await self.flush()
        where, params = _where(principal, since, until)
        column = GROUP_COLUMNS[group_by]
        rows = await self.store.fetchall(
            f"SELECT principal, {column} AS grp, SUM(runs) AS runs, SUM(input_tokens) AS input_tokens, "
            f"SUM(output_tokens) AS output_tokens FROM usage_runs {where} GROUP BY principal, grp "
            "ORDER BY grp, principal", params)
        return [_summary_row(row, group_by) for row in rows]

    async def tokens_since(self, principal: str, since: float) -> int:
        """Input + output tokens ``principal`` used since ``since`` (for budgets at startup)."""
        row = await self.store.fetchone(
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS total FROM usage_runs "
            "WHERE principal = ? AND finished_at >= ?", (principal, since))
        return int(row["total"]) if row is not None else 0


def _where(principal: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if principal is not None:
        clauses.append("principal = ?")
        params.append(principal)
    if since is not None:
        clauses.append("finished_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("finished_at < ?")
        params.append(until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _summary_row(row: Any, group_by: GroupBy) -> dict[str, Any]:
    out: dict[str, Any] = {"principal": row["principal"]}
    if group_by != "principal":
        out[group_by] = row["grp"]
    input_tokens, output_tokens = int(row["input_tokens"] or 0), int(row["output_tokens"] or 0)
    out.update(runs=int(row["runs"]), input_tokens=input_tokens, output_tokens=output_tokens,
               total_tokens=input_tokens + output_tokens)
    return out


def usage_row(*, principal: str, agent: str, provider: str, model: str | None, status: str,
              input_tokens: int, output_tokens: int, finished_at: float | None = None) -> UsageRow:
    """A row with the model name cut to a sane length."""
    return UsageRow(finished_at if finished_at is not None else time.time(), principal, agent, provider,
                    (model or "")[:MAX_MODEL_LENGTH], status, input_tokens, output_tokens)
