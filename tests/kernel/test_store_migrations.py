"""Versioned migrations on both backends, [kernel.store] config,
and ``kernel store status`` / ``kernel store migrate``."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest
from click.testing import CliRunner

from kernel import Message, TextPart, Turn
from kernel.cli import cli
from kernel.config import load_settings
from kernel.errors import ConfigError
from kernel.store import Migration, MigrationError, Schema, migrate, status
from kernel.testing import TEST_TOKEN

V1 = Migration(1, "notes", ("CREATE TABLE mig_notes (n INTEGER PRIMARY KEY, body TEXT NOT NULL)",))


async def _seed(tx) -> None:
    await tx.execute("INSERT INTO mig_notes (n, body) VALUES (?, ?)", (1, f"seeded on {tx.dialect}"))


V2 = Migration(2, "seed", (_seed,))
V3 = Migration(3, "tags", ("ALTER TABLE mig_notes ADD COLUMN tag TEXT",))


@pytest.fixture
async def store(make_store):
    store = make_store()
    await store.open()
    yield store
    await store.close()


async def test_pending_versions_apply_once_in_order_and_a_new_version_later(store):
    assert await migrate(store, [Schema("notes", (V1, V2))]) == [("notes", 1), ("notes", 2)]
    assert await migrate(store, [Schema("notes", (V1, V2))]) == []
    [st] = await status(store, [Schema("notes", (V1, V2, V3))])
    assert (st.applied, [m.version for m in st.pending], st.unknown) == ([1, 2], [3], [])
    assert await migrate(store, [Schema("notes", (V1, V2, V3))]) == [("notes", 3)]
    rows = await store.fetchall("SELECT body, tag FROM mig_notes")
    assert [(r["body"], r["tag"]) for r in rows] == [(f"seeded on {store.dialect}", None)]


async def test_a_failing_step_rolls_back_its_version_and_keeps_the_ones_before(store):
    broken = Migration(2, "broken", ("INSERT INTO mig_notes (n, body) VALUES (7, 'half')", "SELECT * FROM nowhere"))
    with pytest.raises(Exception, match="nowhere"):
        await migrate(store, [Schema("notes", (V1, broken))])
    [st] = await status(store, [Schema("notes", (V1, broken))])
    assert st.applied == [1] and [m.version for m in st.pending] == [2]
    assert await store.fetchall("SELECT n FROM mig_notes") == []


async def test_three_processes_starting_at_once_migrate_once(make_store):
    stores = [make_store() for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        ran = await asyncio.gather(*(migrate(s, [Schema("notes", (V1, V2))]) for s in stores))
        assert sorted(v for r in ran for v in r) == [("notes", 1), ("notes", 2)]
        assert [r["body"] for r in await stores[0].fetchall("SELECT body FROM mig_notes")] == [
            f"seeded on {stores[0].dialect}"]
    finally:
        for s in stores:
            await s.close()


async def test_a_database_migrated_by_a_newer_release_is_refused(store):
    await migrate(store, [Schema("notes", (V1, V2, V3))])
    [st] = await status(store, [Schema("notes", (V1,))])
    assert st.unknown == [2, 3]
    await store.execute("DELETE FROM kernel_migrations WHERE namespace = ? AND version = ?", ("notes", 1))
    with pytest.raises(MigrationError, match=r"version\(s\) \[2, 3\].*newer release"):
        await migrate(store, [Schema("notes", (V1,))])


def test_versions_must_count_from_one():
    with pytest.raises(MigrationError, match="1, 2, 3"):
        Schema("x", (V2,))


def _toml(tmp_path, url: str):
    path = tmp_path / "plugins.toml"
    path.write_text(textwrap.dedent(f"""
        [kernel]
        state_dir = "state"
        [kernel.auth]
        token = "{TEST_TOKEN}"
        [kernel.store]
        url = "{url}"
        [agents.main]
        provider = "echo"
        [plugins.echo]
        enabled = true
        [plugins.openresponses]
        enabled = true
        [plugins.hooks]
        enabled = false
    """))
    return path


def test_the_store_url_takes_env_secrets_and_names_a_bad_scheme(tmp_path, monkeypatch):
    monkeypatch.setenv("STORE_PASSWORD", "s3cret")
    settings = load_settings(_toml(tmp_path, "postgresql://gw:${STORE_PASSWORD}@db.internal:5432/gateway"))
    assert settings.kernel.store.url == "postgresql://gw:s3cret@db.internal:5432/gateway"
    from kernel.store.postgres import redacted

    assert redacted(settings.kernel.store.url) == "postgresql://gw:***@db.internal:5432/gateway"
    with pytest.raises(ConfigError, match=r"\[kernel\.store\] url: .*mysql://\.\.\..*postgresql://"):
        load_settings(_toml(tmp_path, "mysql://root@localhost/x"))


def test_store_status_and_migrate_commands(tmp_path, store_backend, request):
    url = request.getfixturevalue("pg_url") if store_backend == "postgresql" else ""
    config = _toml(tmp_path, url)
    runner = CliRunner()
    before = runner.invoke(cli, ["store", "status", "--json", "--config", str(config)])
    assert before.exit_code == 0, before.output
    data = json.loads(before.output)
    assert data["store"].startswith(store_backend)
    pending = {s["namespace"]: [p["version"] for p in s["pending"]] for s in data["schemas"]}
    assert pending == {"kernel": [1, 2, 3], "openresponses": [1, 2, 3, 4]}
    done = runner.invoke(cli, ["store", "migrate", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert "applied kernel 1" in done.output and "applied openresponses 2" in done.output
    again = runner.invoke(cli, ["store", "migrate", "--config", str(config)])
    assert "up to date: nothing to apply" in again.output
    after = runner.invoke(cli, ["store", "status", "--config", str(config)])
    assert "kernel: version 3 (up to date)" in after.output and "openresponses: version 4 (up to date)" in after.output


async def test_a_kernel_on_postgresql_keeps_sessions_and_responses_across_a_restart(make_app, running, pg_url):
    config = {"kernel": {"store": {"url": pg_url}}, "plugins": {"openresponses": {"enabled": True}},
              "providers": {"seer": {"kind": "echo", "mode": "transcript"}}, "agents": {"seer": {"provider": "seer"}}}
    async with running(make_app(config)) as (kernel, client):
        assert kernel.store.dialect == "postgresql"
        await kernel.runs.start(Turn(agent="main", input=[Message("user", [TextPart("tides")])],
                                     session_key="s-1")).wait()
        created = await client.post("/v1/responses", json={"model": "main", "input": "first"},
                                    headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        first = await created.get_json()
    async with running(make_app(config)) as (kernel, client):  # a new process on the same database
        assert [i.text for i in await kernel.sessions.load("s-1")] == ["tides", "tides"]
        auth = {"Authorization": f"Bearer {TEST_TOKEN}"}
        got = await client.get(f"/v1/responses/{first['id']}", headers=auth)
        assert (await got.get_json())["output"] == first["output"]
        chained = await client.post("/v1/responses", json={"model": "seer", "input": "second",
                                                             "previous_response_id": first["id"]}, headers=auth)
        body = await chained.get_json()
        assert chained.status_code == 200, body
        assert "first" in body["output"][0]["content"][0]["text"]
