"""Durable usage per principal and agent: ``GET /-/usage`` (admin only) and ``kernel usage``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import tomlkit
from click.testing import CliRunner
from quart import Quart

from kernel.cli import build_cli
from kernel.testing import TEST_TOKEN, default_config, merge

ALICE, BOB, OPS = "alice-secret-0001", "bob-secret-000002", "ops-secret-000003"
CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"alice": {"secret": ALICE}, "bob": {"secret": BOB},
                                 "ops": {"secret": OPS, "admin": True}}}},
    "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True}},
    "agents": {"other": {"provider": "echo", "model": "echo-large"}},
}


def chat(base: str, secret: str, text: str, model: str = "main") -> dict[str, Any]:
    answer = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"}, timeout=30,
                        json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["usage"]


def usage(base: str, secret: str = TEST_TOKEN, **params: str) -> httpx.Response:
    return httpx.get(f"{base}/-/usage", params=params, headers={"Authorization": f"Bearer {secret}"})


def test_usage_per_principal_agent_model_and_day(make_app: Callable[..., Quart], live_server: Any) -> None:
    with live_server(make_app(CONFIG)) as base:
        a1 = chat(base, ALICE, "one two three")
        a2 = chat(base, ALICE, "four", model="other")
        b1 = chat(base, BOB, "five six")
        by_principal = usage(base).json()
        assert by_principal["object"] == "list" and by_principal["group_by"] == "principal"
        rows = {r["principal"]: r for r in by_principal["data"]}
        assert rows["alice"] == {
            "principal": "alice", "runs": 2, "input_tokens": a1["prompt_tokens"] + a2["prompt_tokens"],
            "output_tokens": a1["completion_tokens"] + a2["completion_tokens"],
            "total_tokens": a1["total_tokens"] + a2["total_tokens"]}
        assert rows["bob"]["total_tokens"] == b1["total_tokens"]

        by_agent = usage(base, OPS, principal="alice", group_by="agent").json()["data"]
        assert [(r["agent"], r["runs"], r["total_tokens"]) for r in by_agent] == [
            ("main", 1, a1["total_tokens"]), ("other", 1, a2["total_tokens"])]
        by_model = usage(base, principal="alice", group_by="model").json()["data"]
        assert {r["model"] for r in by_model} == {"", "echo-large"}
        [today] = usage(base, principal="bob", group_by="day").json()["data"]
        assert len(today["day"]) == 10 and today["runs"] == 1

        assert usage(base, since="2999-01-01").json()["data"] == []
        assert usage(base, until="2000-01-01T00:00:00Z").json()["data"] == []
        assert len(usage(base, since="0", until="4102444800").json()["data"]) == 2


def test_usage_is_admin_only_and_checks_its_parameters(make_app: Callable[..., Quart], live_server: Any) -> None:
    with live_server(make_app(CONFIG)) as base:
        assert httpx.get(f"{base}/-/usage").status_code == 401
        refused = usage(base, ALICE)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
        bad = usage(base, group_by="secret_column")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        bad_time = usage(base, since="yesterday")
        assert bad_time.status_code == 400 and bad_time.json()["error"]["param"] == "since"


def test_usage_survives_a_restart_and_kernel_usage_prints_it(make_app: Callable[..., Quart], live_server: Any,
                                                             tmp_path: Path) -> None:
    app = make_app(CONFIG)
    with live_server(app) as base:
        first = chat(base, ALICE, "durable words")
    # Written at shutdown at the latest; a new app on the same state directory reads it.
    with live_server(make_app(CONFIG)) as base:
        [row] = usage(base, principal="alice").json()["data"]
        assert row["total_tokens"] == first["total_tokens"]

    config_path = tmp_path / "cli.toml"
    # The same store the server used (SQLite file, or PostgreSQL with --store-backend=postgresql).
    store = {"kernel": {"store": {"url": app.extensions["kernel"].settings.kernel.store.url}}}
    config_path.write_text(tomlkit.dumps(merge(merge(default_config(tmp_path / "state"), CONFIG), store)))
    runner = CliRunner()
    args = ["--config", str(config_path), "usage", "--group-by", "agent", "--json"]
    printed = runner.invoke(build_cli(args), args)
    assert printed.exit_code == 0, printed.output
    data = json.loads(printed.output)["data"]
    assert data == [{"principal": "alice", "agent": "main", "runs": 1, "input_tokens": first["prompt_tokens"],
                     "output_tokens": first["completion_tokens"], "total_tokens": first["total_tokens"]}]
    args = ["--config", str(config_path), "usage"]
    table = runner.invoke(build_cli(args), args)
    assert table.exit_code == 0, table.output
    header, line = table.output.splitlines()
    assert header.split() == ["principal", "runs", "input_tokens", "output_tokens", "total_tokens"]
    assert line.split() == ["alice", "1", str(first["prompt_tokens"]), str(first["completion_tokens"]),
                            str(first["total_tokens"])]
    bad = runner.invoke(build_cli(["--config", str(config_path), "usage", "--since", "soon"]),
                        ["--config", str(config_path), "usage", "--since", "soon"])
    assert bad.exit_code != 0 and "since must be a date" in bad.output

