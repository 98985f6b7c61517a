"""The kernel's store interface: one shape for every backend (SQLite, PostgreSQL).

SQL is written once, with ``?`` placeholders and portable types (``TEXT``, ``INTEGER``,
``DOUBLE PRECISION``); a backend translates the placeholders for its driver. Rows are
read by column name (``row["id"]``) or position. Writes go through :meth:`Store.transaction`
(commit on success, roll back on error); :meth:`Store.fetchall` / :meth:`Store.fetchone`
see committed rows only, never another task's open transaction.

Plugins never import a driver: they receive a :class:`Store` (``kernel.store``) and
declare their tables as versioned migrations (:mod:`kernel.store.migrations`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
# A row: read by column name or by position.
Row = Mapping[str, Any]
# Told a notification's payload (see Store.subscribe); must not block.
Subscriber = Callable[[str], None]

log = logging.getLogger("kernel.store")


class Transaction(Protocol):
    """The connection a transaction holds: its reads see its own uncommitted writes."""

    dialect: Dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row of a query, or None."""

    async def lock(self, key: str) -> None:
        """Serialise this transaction with every other one that locks ``key`` (until it ends)."""

    async def notify(self, channel: str, payload: str) -> None:
        """Tell every process's subscribers of ``channel`` once this transaction commits
        (never if it rolls back). Payloads are short ids: rows stay the source of truth."""


class Store(ABC):
    """Durable state: a database reached through one backend."""

    dialect: Dialect

    @abstractmethod
    async def open(self) -> None:
        """Connect (creating the database file for SQLite)."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    #: Request and run observers (kernel.observe), told of every transaction; set by the kernel.
    observers: Any = None

    @asynccontextmanager
    async def transaction(self, label: str = "other", items: int = 1) -> AsyncIterator[Transaction]:
        """A transaction: commits when the block ends, rolls back if it raises.

        ``label`` (a fixed word such as ``"sessions"``) and ``items`` (how many records the
        transaction writes) are only reported to observers, for store metrics and spans.
        """
        observers = self.observers
        if observers is None or not observers.active:
            async with self._transaction() as tx:
                yield tx
            return
        started, clock, ok = time.time(), time.perf_counter(), False
        try:
            async with self._transaction() as tx:
                yield tx
            ok = True
        finally:
            observers.store_write(label, items, started, time.perf_counter() - clock, ok)

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """The backend's transaction (see :meth:`transaction`)."""

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query, as committed."""

    @abstractmethod
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row of a query, as committed, or None."""

    @abstractmethod
    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Hold the store's migration lock (one holder across every process on the database)."""

    #: True when several processes may share the database (PostgreSQL): the leases,
    #: notifications and key locks below then reach across processes.
    shared: bool = False

    async def lead(self) -> bool:
        """True while this process is the cluster's housekeeping leader (taking the role when
        it is free). One process per database: always True."""
        return True

    @asynccontextmanager
    async def key_lock(self, key: str) -> AsyncIterator[None]:
        """Hold ``key`` against every other process until the block ends (outside any
        transaction, for work spanning many). One process per database: nothing to hold,
        callers serialise in memory."""
        yield

    async def subscribe(self, channel: str, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(payload)`` for each notification on ``channel`` (from any process);
        returns the function that unsubscribes."""
        subscribers = self._subscribers().setdefault(channel, set())
        subscribers.add(subscriber)
        return lambda: subscribers.discard(subscriber)

    async def notify(self, channel: str, payload: str) -> None:
        """Notify ``channel``'s subscribers in every process (outside a transaction)."""
        self._dispatch(channel, payload)

    def _subscribers(self) -> dict[str, set[Subscriber]]:
        subs = self.__dict__.get("_subs")
        if subs is None:
            subs = self.__dict__["_subs"] = {}
        return subs

    def _dispatch(self, channel: str, payload: str) -> None:
        for subscriber in list(self._subscribers().get(channel, ())):
            try:
                subscriber(payload)
            except Exception:  # one subscriber's bug must not starve the others
                log.exception("store: a subscriber of %s failed", channel)

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for logs and ``kernel store status`` (never a password)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; returns the rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def ensure_schema(self, statements: Iterable[str]) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) in one transaction.

        Prefer versioned migrations (:mod:`kernel.store.migrations`); this stays for
        small plugin tables that never change shape.
        """
        async with self.transaction() as tx:
            for stmt in statements:
                await tx.execute(stmt)


