"""Leases: which process runs what, so a survivor can fail a dead process's runs.

Each gateway process is an *instance* with a row in ``kernel_instances`` whose
``lease_until`` it pushes forward every third of ``[kernel.store] lease_seconds``
(one UPDATE however many runs it executes). A run's row carries the instance that
executes it (``instance_id``), so its lease is its instance's lease. A run whose
instance row is missing or expired is *orphaned*: the process running it stopped.

The housekeeping leader (:meth:`Store.lead`, one process per database) calls the
registered *reapers* (plugins: openresponses fails orphaned responses, hooks fails
orphaned hook runs) every heartbeat, then deletes expired instance rows. A process
starting up reaps only what is orphaned, never another live process's runs.

On SQLite there is one process per state directory (its lock): a starting process
deletes every other instance row first, so whatever the last process left running is
orphaned at once, as before leases existed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from kernel.store.base import Store

log = logging.getLogger("kernel.store")

INSTANCES_TABLE = """CREATE TABLE IF NOT EXISTS kernel_instances (
    instance_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL
)"""

Reaper = Callable[[], Awaitable[int]]


class Leases:
    """This process's instance row, its heartbeat, and the reapers the leader runs."""

    def __init__(self, store: Store, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.instance_id = uuid.uuid4().hex
        self._reapers: list[tuple[str, Reaper]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: three per lease, so one late beat never expires it."""
        return self.lease_seconds / 3

    def orphaned(self, column: str) -> tuple[str, tuple[float]]:
        """SQL (and its parameter) true when the instance named by ``column`` holds no live lease."""
        return (f"NOT EXISTS (SELECT 1 FROM kernel_instances k WHERE k.instance_id = {column} "
                "AND k.lease_until >= ?)", (time.time(),))

    def add_reaper(self, name: str, reaper: Reaper) -> None:
        """Have the leader call ``reaper()`` (it fails orphaned rows, returns how many)."""
        self._reapers.append((name, reaper))

    async def start(self) -> None:
        """Take this process's lease and start the heartbeat (the store must be migrated)."""
        now = time.time()
        async with self.store.transaction("leases") as tx:
            if not self.store.shared:
                # The state-directory lock proves no other process runs: its rows are orphans.
                await tx.execute("DELETE FROM kernel_instances")
            await tx.execute(
                "INSERT INTO kernel_instances (instance_id, host, pid, started_at, lease_until) VALUES (?, ?, ?, ?, ?)",
                (self.instance_id, socket.gethostname()[:200], os.getpid(), now, now + self.lease_seconds))
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="kernel-leases")

    async def stop(self) -> None:
        """Stop the heartbeat and give the lease up (runs have drained by now)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            await self._write("DELETE FROM kernel_instances WHERE instance_id = ?", (self.instance_id,))
        except Exception:  # the lease expires by itself
            log.exception("store: could not give up this process's lease")

    async def renew(self) -> None:
        """Push the lease forward; re-take it if a leader already expired it (a long stall)."""
        now = time.time()
        renewed = await self._write("UPDATE kernel_instances SET lease_until = ? WHERE instance_id = ?",
                                    (now + self.lease_seconds, self.instance_id))
        if not renewed:
            log.warning("store: this process's lease had expired (stalled for over %g s); runs it had "
                        "may have been failed by another process", self.lease_seconds)
            await self._write(
                "INSERT INTO kernel_instances (instance_id, host, pid, started_at, lease_until) VALUES (?, ?, ?, ?, ?)",
                (self.instance_id, socket.gethostname()[:200], os.getpid(), now, now + self.lease_seconds))

    async def reap(self) -> int:
        """Run every reaper, then drop expired instance rows; the number of runs failed."""
        total = 0
        for name, reaper in self._reapers:
            try:
                count = await reaper()
            except asyncio.CancelledError:
                raise
            except Exception:  # retried next heartbeat
                log.exception("store: reaping orphaned %s failed", name)
                continue
            if count:
                log.warning("marked %d %s failed: the process running them stopped (its lease expired)",
                            count, name)
            total += count
        # After the reapers: a row deleted first would make its runs look orphaned anyway,
        # but keeping it until they are failed keeps the order easy to reason about.
        await self._write("DELETE FROM kernel_instances WHERE lease_until < ?", (time.time(),))
        return total

    async def _write(self, sql: str, params: tuple[object, ...]) -> int:
        # Labelled, so store metrics tell lease bookkeeping from request work.
        async with self.store.transaction("leases") as tx:
            return await tx.execute(sql, params)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
                if await self.store.lead():
                    await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next beat
                log.exception("store: lease heartbeat failed")
