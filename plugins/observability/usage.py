"""Durable usage per principal, agent, provider, model and run status.

Kept in the kernel's store (SQLite or PostgreSQL: the table and its reads are in
:mod:`plugins.observability.ledger`), behind the small :class:`UsageStore` interface.
Finished runs are summed in memory and written at most
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
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from kernel.store import Store
from plugins.observability import ledger
from plugins.observability.ledger import GroupBy

log = logging.getLogger("plugins.observability")

MAX_MODEL_LENGTH = 200


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
    """Where usage lives: the kernel's store (:class:`SqlUsageStore`)."""

    async def open(self) -> None: ...

    def record(self, row: UsageRow) -> None:
        """Queue a row (synchronous: called at the end of a run)."""

    def add(self, finished_at: float, principal: str, agent: str, provider: str, model: str, status: str,
            input_tokens: int, output_tokens: int) -> None:
        """Queue a finished run, fields as in :class:`UsageRow` (the model already cut)."""

    before_flush: Callable[[], None] | None

    async def flush(self) -> None: ...

    async def close(self) -> None: ...

    async def summary(self, *, principal: str | None, since: float | None, until: float | None,
                      group_by: GroupBy) -> list[dict[str, Any]]: ...

    async def tokens_since(self, principal: str, since: float) -> int: ...


class SqlUsageStore:
    """``usage_runs`` in the kernel's store (either backend), written in batches."""

    def __init__(self, store: Store, flush_seconds: float = 1.0) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        # (principal, agent, provider, model, status, UTC day) -> [first time, runs, input, output]
        self._pending: dict[tuple[str, str, str, str, str, int], list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Called before each write (the observer applies the runs it queued).
        self.before_flush: Callable[[], None] | None = None

    async def open(self) -> None:
        """Start the periodic flush (the table exists: the kernel applied its migration)."""
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically(), name="usage-flush")

    def record(self, row: UsageRow) -> None:
        """Queue a row."""
        self.add(*row)

    def add(self, finished_at: float, principal: str, agent: str, provider: str, model: str, status: str,
            input_tokens: int, output_tokens: int) -> None:
        """Queue a finished run (:meth:`record` without building a row: called for every run)."""
        key = (principal, agent, provider, model, status, int(finished_at // 86400))
        sums = self._pending.get(key)
        if sums is None:
            self._pending[key] = [finished_at, 1, input_tokens, output_tokens]
        else:
            sums[1] += 1
            sums[2] += input_tokens
            sums[3] += output_tokens

    async def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()
        async with self._lock:  # one batch at a time, in order
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            rows = [(at, ledger.day_of(key[5]), int(runs), *key[:5], int(tokens_in), int(tokens_out))
                    for key, (at, runs, tokens_in, tokens_out) in batch.items()]
            try:
                async with self.store.transaction("usage", len(rows)) as db:
                    await db.executemany(ledger.INSERT, rows)
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
        return await ledger.summarise(self.store, principal=principal, since=since, until=until, group_by=group_by)

    async def tokens_since(self, principal: str, since: float) -> int:
        """Input + output tokens ``principal`` used since ``since`` (for budgets at startup)."""
        return await ledger.tokens_since(self.store, principal, since)


def usage_row(*, principal: str, agent: str, provider: str, model: str | None, status: str,
              input_tokens: int, output_tokens: int, finished_at: float | None = None) -> UsageRow:
    """A row with the model name cut to a sane length."""
    return UsageRow(finished_at if finished_at is not None else time.time(), principal, agent, provider,
                    (model or "")[:MAX_MODEL_LENGTH], status, input_tokens, output_tokens)
