"""The usage ledger on both store backends (SQLite and PostgreSQL): its versioned migration,
batched writes, day/agent/model sums, budgets' reads, a ledger made before migrations,
and ``kernel usage`` reading through the store the config names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from click.testing import CliRunner

from kernel.cli import build_cli
from kernel.store import Store, migrate, status
from kernel.testing import default_config, merge
from plugins.observability.ledger import SCHEMA
from plugins.observability.usage import SqlUsageStore, usage_row

DAY1 = 1_796_774_400.0  # 2026-12-09 00:00:00 UTC
DAY2 = DAY1 + 86400


def row(principal: str, at: float, tokens_in: int, tokens_out: int, agent: str = "main", model: str = "m1") -> Any:
    return usage_row(principal=principal, agent=agent, provider="echo", model=model, status="completed",
                     input_tokens=tokens_in, output_tokens=tokens_out, finished_at=at)


async def fill(store: Store) -> None:
    """Five runs of two keys over two UTC days, written by the batching store."""
    assert await migrate(store, [SCHEMA]) == [("observability", 1), ("observability", 2)]
    usage = SqlUsageStore(store, flush_seconds=3600)
    await usage.open()
    usage.record(row("alice", DAY1 + 10, 100, 20))
    usage.record(row("alice", DAY1 + 86000, 1, 2, agent="other", model="m2"))  # same day, another agent
    usage.record(row("alice", DAY2 + 5, 7, 3))
    usage.record(row("bob", DAY2 + 60, 40, 4))
    usage.record(row("bob", DAY2 + 70, 60, 6))  # summed into bob's row of that day
    await usage.close()  # flushes


def test_ledger_sums_on_both_backends(make_store: Callable[[], Store]) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.open()
        try:
            await fill(store)
            # The migration is recorded; a second start applies nothing.
            [st] = await status(store, [SCHEMA])
            assert st.applied == [1, 2] and not st.pending
            assert await migrate(store, [SCHEMA]) == []
            # Two runs of bob on one day and key are one row (batched), two runs counted.
            raw = await store.fetchall("SELECT day, runs, input_tokens FROM usage_runs WHERE principal = ?", ("bob",))
            assert [(r["day"], int(r["runs"]), int(r["input_tokens"])) for r in raw] == [("2026-12-10", 2, 100)]
        finally:
            await store.close()
        # "The next process" reads the same ledger.
        store = make_store()
        await store.open()
        usage = SqlUsageStore(store)
        try:
            by_day = await usage.summary(principal=None, since=None, until=None, group_by="day")
            assert [(r["day"], r["principal"], r["runs"], r["total_tokens"]) for r in by_day] == [
                ("2026-12-09", "alice", 2, 123), ("2026-12-10", "alice", 1, 10), ("2026-12-10", "bob", 2, 110)]
            by_key = await usage.summary(principal=None, since=None, until=None, group_by="principal")
            assert by_key == [
                {"principal": "alice", "runs": 3, "input_tokens": 108, "output_tokens": 25, "total_tokens": 133},
                {"principal": "bob", "runs": 2, "input_tokens": 100, "output_tokens": 10, "total_tokens": 110}]
            by_agent = await usage.summary(principal="alice", since=None, until=None, group_by="agent")
            assert [(r["agent"], r["runs"]) for r in by_agent] == [("main", 2), ("other", 1)]
            by_model = await usage.summary(principal="alice", since=DAY1, until=DAY2, group_by="model")
            assert [(r["model"], r["total_tokens"]) for r in by_model] == [("m1", 120), ("m2", 3)]
            assert await usage.summary(principal=None, since=DAY2 + 86400, until=None, group_by="principal") == []
            assert await usage.tokens_since("alice", DAY2) == 10
            assert await usage.tokens_since("bob", DAY1) == 110
            assert await usage.tokens_since("nobody", DAY1) == 0
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_ledger_made_before_migrations_is_kept(make_store: Callable[[], Store]) -> None:
    """The plugin used to create usage_runs itself (no day column, REAL times): its rows survive."""
    async def scenario() -> None:
        store = make_store()
        await store.open()
        try:
            await store.ensure_schema(["""CREATE TABLE usage_runs (finished_at REAL NOT NULL, runs INTEGER NOT NULL,
                principal TEXT NOT NULL, agent TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
                status TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL)""",
                "CREATE INDEX usage_runs_by_principal ON usage_runs (principal, finished_at)"])
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO usage_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (DAY1 + 3600, 4, "carol", "main", "echo", "m1", "completed", 40, 8))
            assert await migrate(store, [SCHEMA]) == [("observability", 1), ("observability", 2)]
            usage = SqlUsageStore(store)
            [kept] = await usage.summary(principal=None, since=None, until=None, group_by="day")
            assert kept == {"principal": "carol", "day": "2026-12-09", "runs": 4, "input_tokens": 40,
                            "output_tokens": 8, "total_tokens": 48}
            usage.record(row("carol", DAY1 + 7200, 1, 1))
            await usage.flush()
            assert await usage.tokens_since("carol", DAY1) == 50
        finally:
            await store.close()

    asyncio.run(scenario())


def test_kernel_usage_reads_the_configured_store(make_store: Callable[[], Store], store_backend: str,
                                                 tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def write() -> None:
        store = make_store()
        await store.open()
        try:
            await fill(store)
        finally:
            await store.close()

    asyncio.run(write())
    config = merge(default_config(tmp_path / "state"), {"plugins": {"observability": {"enabled": True}}})
    if store_backend == "postgresql":
        config["kernel"]["store"] = {"url": request.getfixturevalue("pg_url")}
    config_path = tmp_path / "cli.toml"
    config_path.write_text(tomlkit.dumps(config))
    args = ["--config", str(config_path), "usage", "--group-by", "day", "--principal", "bob", "--json"]
    printed = CliRunner().invoke(build_cli(args), args)
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["data"] == [
        {"principal": "bob", "day": "2026-12-10", "runs": 2, "input_tokens": 100, "output_tokens": 10,
         "total_tokens": 110}]
    args = ["--config", str(config_path), "usage", "--since", "2026-12-10"]
    table = CliRunner().invoke(build_cli(args), args)
    assert table.exit_code == 0, table.output
    assert [line.split() for line in table.output.splitlines()] == [
        ["principal", "runs", "input_tokens", "output_tokens", "total_tokens"],
        ["alice", "1", "7", "3", "10"], ["bob", "2", "100", "10", "110"]]


def test_kernel_usage_on_a_store_the_plugin_never_used(make_store: Callable[[], Store], store_backend: str,
                                                       tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def touch() -> None:
        store = make_store()
        await store.open()
        await store.close()

    asyncio.run(touch())
    config = merge(default_config(tmp_path / "state"), {"plugins": {"observability": {"enabled": True}}})
    if store_backend == "postgresql":
        config["kernel"]["store"] = {"url": request.getfixturevalue("pg_url")}
    config_path = tmp_path / "cli.toml"
    config_path.write_text(tomlkit.dumps(config))
    args = ["--config", str(config_path), "usage", "--json"]
    printed = CliRunner().invoke(build_cli(args), args)
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["data"] == []
