"""Hook run records in the kernel's store (SQLite and PostgreSQL): retention, restart handling, summaries."""

from __future__ import annotations

import asyncio
import time

from kernel import Message, RunError, TextPart, Usage
from kernel.runs import RunResult
from kernel.sessions import KERNEL_SCHEMA
from kernel.store import Store, migrate
from kernel.store.leases import Leases
from plugins.hooks.records import MAX_OUTPUT_CHARS, HookRunRecord, HookRunStore
from plugins.hooks.service import summary_line


async def hook_runs(store: Store, retention_seconds: float) -> tuple[HookRunStore, Leases]:
    """A process's view: its lease taken (the kernel's schema migrated first, as at startup)."""
    await migrate(store, [KERNEL_SCHEMA])
    leases = Leases(store, lease_seconds=30)
    await leases.start()
    runs = HookRunStore(store, retention_seconds, leases)
    await runs.open()
    return runs, leases


def record(run_id: str) -> HookRunRecord:
    return HookRunRecord(run_id=run_id, hook="agent", name="n", agent="main", session_key="hook:1",
                         status="queued", created_at=time.time())


async def test_unfinished_runs_are_marked_interrupted_at_open(make_store):
    store = make_store()
    await store.open()
    runs, leases = await hook_runs(store, 60)
    await runs.create(record("run_a"))
    await runs.create(record("run_b"))
    await runs.finish("run_b", status="completed", output_text="x" * (MAX_OUTPUT_CHARS + 5),
                      usage={"input_tokens": 1}, error=None, finished_at=time.time())
    await leases.stop()  # the process stops with run_a unfinished: its lease is given up
    await store.close()

    store = make_store()  # the next process
    await store.open()
    runs, _ = await hook_runs(store, 60)
    a, b = await runs.get("run_a"), await runs.get("run_b")
    assert a.status == "failed" and a.error["code"] == "interrupted" and a.finished_at is not None
    assert b.status == "completed" and b.output_truncated and len(b.output_text) == MAX_OUTPUT_CHARS
    assert b.usage == {"input_tokens": 1}
    await store.close()


async def test_expired_records_vanish(make_store):
    store = make_store()
    await store.open()
    runs, _ = await hook_runs(store, 0.05)
    await runs.create(record("run_a"))
    await runs.create(record("run_live"))
    await runs.finish("run_a", status="completed", output_text="", usage=None, error=None, finished_at=time.time())
    assert await runs.get("run_a") is not None
    await asyncio.sleep(0.1)
    assert await runs.get("run_a") is None
    await runs.purge()
    rows = await store.fetchall("SELECT run_id FROM hook_runs")
    assert [r["run_id"] for r in rows] == ["run_live"]  # unfinished runs are never expired
    await store.close()


def result(status: str, text: str = "", error: RunError | None = None) -> RunResult:
    output = [Message(role="assistant", parts=[TextPart(text)])] if text else []
    return RunResult(status, output, Usage(), "stop", error)  # type: ignore[arg-type]


def test_summary_line():
    assert summary_line("CI", result("completed", "\n\n  All green  \nmore")) == "Hook CI: completed: All green"
    assert summary_line("CI", result("completed")) == "Hook CI: completed: (no output)"
    assert summary_line("Multi\nline   name", result("incomplete", "x")) == "Hook Multi line name: incomplete: x"
    long = summary_line("CI", result("completed", "y" * 500))
    assert long == "Hook CI: completed: " + "y" * 159 + "…"
    failed = result("failed", "partial words", RunError("run timed out after 5 seconds\ndetails", code="timeout"))
    assert summary_line("CI", failed) == "Hook CI: failed: run timed out after 5 seconds"
    assert len(summary_line("n" * 300, result("completed", "x"))) < 120
