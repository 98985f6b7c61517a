"""What lets several processes share one PostgreSQL store: notifications across stores,
one housekeeping leader, key locks, and leases (each store here stands for a process:
its own pool and connections). SQLite keeps one process: the same calls stay local."""

from __future__ import annotations

import asyncio

import pytest

from kernel.sessions import KERNEL_SCHEMA, SessionLock
from kernel.store import migrate, open_store
from kernel.store.leases import Leases


async def _two(pg_url):
    first, second = open_store(pg_url, None), open_store(pg_url, None)  # type: ignore[arg-type]
    await first.open()
    await second.open()
    await migrate(first, [KERNEL_SCHEMA])
    return first, second


async def test_a_notification_committed_in_one_process_reaches_the_others_once(pg_url):
    first, second = await _two(pg_url)
    heard: list[str] = []
    got = asyncio.Event()

    def on(payload: str) -> None:
        heard.append(payload)
        got.set()

    try:
        unsubscribe = await second.subscribe("or_events", on)
        async with first.transaction() as tx:
            await tx.notify("or_events", "resp_1")
            await asyncio.sleep(0.2)
            assert heard == []  # not before the commit
        await asyncio.wait_for(got.wait(), 5)
        with pytest.raises(RuntimeError):
            async with first.transaction() as tx:
                await tx.notify("or_events", "resp_rolled_back")
                raise RuntimeError("roll back")
        await first.notify("or_events", "resp_2")
        await asyncio.sleep(0.3)
        assert heard == ["resp_1", "resp_2"]
        unsubscribe()
        await first.notify("or_events", "resp_3")
        await asyncio.sleep(0.3)
        assert heard == ["resp_1", "resp_2"]
    finally:
        await first.close()
        await second.close()


async def test_one_leader_at_a_time_and_the_role_passes_on_when_it_stops(pg_url):
    first, second = await _two(pg_url)
    try:
        assert await first.lead() is True
        assert await second.lead() is False
        assert await first.lead() is True  # kept, not retaken
        await first.close()  # the process stops: its control connection, and the role, go
        assert await second.lead() is True
    finally:
        await first.close()
        await second.close()


async def test_a_session_turn_lock_holds_across_processes(pg_url):
    first, second = await _two(pg_url)
    order: list[str] = []
    try:
        a, b = SessionLock(first, "s-1"), SessionLock(second, "s-1")
        await a.acquire()
        waiter = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.3)
        assert not waiter.done()  # the other process waits in the database
        order.append("a ends")
        a.release()
        await asyncio.wait_for(waiter, 5)
        order.append("b starts")
        async with SessionLock(first, "s-2"):  # another key is never held up
            pass
        b.release()
        await asyncio.sleep(0.1)
        async with a:  # free again
            pass
        assert order == ["a ends", "b starts"]
    finally:
        await first.close()
        await second.close()


async def test_a_dead_process_lease_expires_while_a_live_one_is_kept(pg_url):
    first, second = await _two(pg_url)
    try:
        await first.ensure_schema(["CREATE TABLE runs (id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, "
                                   "status TEXT NOT NULL)"])
        dead, live = Leases(first, lease_seconds=1), Leases(second, lease_seconds=1)
        await dead.start()
        await live.start()
        await first.execute("INSERT INTO runs VALUES ('a', ?, 'in_progress'), ('b', ?, 'in_progress')",
                            (dead.instance_id, live.instance_id))

        async def fail_orphaned() -> int:
            sql, params = live.orphaned("runs.instance_id")
            return await second.execute(f"UPDATE runs SET status = 'failed' WHERE status = 'in_progress' AND {sql}",
                                        params)

        assert await fail_orphaned() == 0  # both leases are live: nothing is touched
        dead._task.cancel()  # type: ignore[union-attr]  # it stops beating: as if killed
        live.add_reaper("runs", fail_orphaned)
        await asyncio.sleep(2.0)  # past the dead one's lease; the live one renews every 1/3 s and leads
        rows = await second.fetchall("SELECT id, status FROM runs ORDER BY id")
        assert [(r["id"], r["status"]) for r in rows] == [("a", "failed"), ("b", "in_progress")]
        remaining = await second.fetchall("SELECT instance_id FROM kernel_instances")
        assert [r["instance_id"] for r in remaining] == [live.instance_id]  # the expired row is gone
        await live.stop()
        assert await second.fetchall("SELECT instance_id FROM kernel_instances") == []
    finally:
        await first.close()
        await second.close()


async def test_sqlite_stays_one_process(tmp_path):
    store = open_store("", tmp_path)
    await store.open()
    try:
        await migrate(store, [KERNEL_SCHEMA])
        assert store.shared is False and await store.lead() is True
        earlier = Leases(store, lease_seconds=30)
        await earlier.start()  # a process that crashed: its row stays
        earlier._task.cancel()  # type: ignore[union-attr]
        now = Leases(store, lease_seconds=30)
        await now.start()  # the state-directory lock proves the earlier one is gone
        sql, params = now.orphaned("?")
        row = await store.fetchone(f"SELECT 1 AS orphaned WHERE {sql}", (earlier.instance_id, *params))
        assert row is not None
        heard: list[str] = []
        await store.subscribe("c", heard.append)
        async with store.transaction() as tx:
            await tx.notify("c", "x")
            assert heard == []
        assert heard == ["x"]
        await now.stop()
    finally:
        await store.close()
