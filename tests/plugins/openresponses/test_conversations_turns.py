"""Conversation turns at the edges: a client leaving mid-stream, two turns at once, the
WebSocket transport, retention, and a real process restarted on the same state directory."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.conversations import ConversationItemList

from kernel.errors import ConfigError
from kernel.testing import AUTH_HEADERS, TEST_TOKEN, serve_process

from .conftest import wait_for
from .stored_support import Probe, stored_app
from .ws_support import Socket, text_of


def items_of(server, conversation_id: str) -> list[dict]:
    raw = server.http.get(f"/v1/conversations/{conversation_id}/items",
                          params={"order": "asc", "limit": 100}).json()
    ConversationItemList.model_validate(raw)
    return raw["data"]


def texts(items: list[dict]) -> list[str]:
    return ["".join(part["text"] for part in item["content"]) for item in items]


def test_a_client_leaving_mid_stream_appends_the_turn_once_with_the_cut_item_incomplete(stored):
    conv = stored.sdk.conversations.create()
    probe = Probe(before=2, after=2)
    with httpx.Client(base_url=stored.base, headers=AUTH_HEADERS, timeout=30) as client:
        with client.stream("POST", "/v1/responses", json={"model": "probe", "conversation": conv.id,
                                                          "input": probe.key, "stream": True}) as resp:
            assert resp.status_code == 200
            wait_for(probe.started.is_set)
        # The connection closed here, mid-answer: the run is cancelled.
    wait_for(probe.cancelled.is_set)
    wait_for(lambda: len(items_of(stored, conv.id)) == 2)
    time.sleep(0.2)  # nothing more arrives later
    user, cut = items_of(stored, conv.id)
    assert texts([user]) == [probe.key]
    assert cut["role"] == "assistant" and cut["status"] == "incomplete" and texts([cut]) == ["b0 b1 "]
    assert user["status"] == "completed"
    # The next turn sees the cut answer as it was.
    after = stored.sdk.responses.create(model="main", conversation=conv.id, input="go on")
    assert after.output_text == f"user: {probe.key}\nassistant: b0 b1 \nuser: go on"


def test_two_turns_on_one_conversation_run_one_after_the_other(stored):
    conv = stored.sdk.conversations.create()
    probe = Probe(before=1, after=1)
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = stored.sdk.responses.create(model="probe", conversation=conv.id, input=probe.key)

    thread = threading.Thread(target=first)
    thread.start()
    wait_for(probe.started.is_set)

    def second() -> None:
        results["second"] = stored.sdk.responses.create(model="main", conversation=conv.id, input="later")

    waiting = threading.Thread(target=second)
    waiting.start()
    time.sleep(0.3)
    assert "second" not in results  # queued behind the running turn, not interleaved
    probe.release.set()
    thread.join(10)
    waiting.join(10)
    second_answer = results["second"].output_text  # type: ignore[attr-defined]
    assert second_answer == f"user: {probe.key}\nassistant: b0 a0 \nuser: later"
    assert texts(items_of(stored, conv.id)) == [probe.key, "b0 a0 ", "later", second_answer]


def test_websocket_turns_continue_a_conversation(stored):
    conv = stored.sdk.conversations.create(items=[{"role": "user", "content": "hello"}])
    with Socket(stored.base) as ws:
        first = ws.turn({"model": "words", "conversation": conv.id, "input": "over the socket"})
        second = ws.turn({"model": "main", "conversation": {"id": conv.id}, "input": "and again"})
    assert first[-1]["response"]["conversation"] == {"id": conv.id}
    assert text_of(second) == "user: hello\nuser: over the socket\nassistant: over the socket\nuser: and again"
    listed = items_of(stored, conv.id)
    assert listed[2]["id"] == first[-1]["response"]["output"][0]["id"]
    assert len(listed) == 5


def test_a_deleted_conversation_takes_its_items_and_turns_refuse_it(stored):
    conv = stored.sdk.conversations.create(items=[{"role": "user", "content": "gone soon"}])
    stored.sdk.responses.create(model="words", conversation=conv.id, input="x")
    stored.sdk.conversations.delete(conv.id)
    with sqlite3.connect(stored.kernel.store.path) as db:  # read beside the server (WAL)
        left = db.execute("SELECT count(*) FROM session_items WHERE session_key = ?", (conv.id,)).fetchone()[0]
        meta = db.execute("SELECT count(*) FROM session_meta WHERE id = ?", (conv.id,)).fetchone()[0]
    assert (left, meta) == (0, 0)
    resp = stored.http.post("/v1/responses", json={"input": "x", "conversation": conv.id})
    assert resp.status_code == 404


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\nshutdown_grace_seconds = 0.3\n'
        f'[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[agents.main]\nprovider = "t"\n'
        '[providers.t]\nkind = "echo"\nmode = "transcript"\n'
        f"[plugins.echo]\nenabled = true\n[plugins.openresponses]\nenabled = true\n{extra}",
        encoding="utf-8",
    )
    return path


def test_conversations_survive_a_restart(tmp_path):
    config = write_config(tmp_path)
    with serve_process(config) as served:
        sdk = openai.OpenAI(base_url=f"{served.base}/v1", api_key=TEST_TOKEN, max_retries=0)
        conv = sdk.conversations.create(metadata={"who": "ada"}, items=[{"role": "user", "content": "remember"}])
        first = sdk.responses.create(model="main", conversation=conv.id, input="one")
        sdk.close()
    with serve_process(config) as served:
        sdk = openai.OpenAI(base_url=f"{served.base}/v1", api_key=TEST_TOKEN, max_retries=0)
        assert sdk.conversations.retrieve(conv.id).metadata == {"who": "ada"}
        listed = list(sdk.conversations.items.list(conv.id, order="asc"))
        assert [item.id for item in listed][2] == first.output[0].id
        second = sdk.responses.create(model="main", conversation=conv.id, input="two")
        assert second.output_text == f"user: remember\nuser: one\nassistant: {first.output_text}\nuser: two"
        sdk.close()


def test_idle_conversations_expire_by_conversation_retention(make_app, live_server, state_sql):
    app = stored_app(make_app, retention="none", conversation_retention="1h", sweep_interval_seconds=0.05)
    with live_server(app) as base:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0)
        old = sdk.conversations.create(items=[{"role": "user", "content": "old"}])
        fresh = sdk.conversations.create(items=[{"role": "user", "content": "fresh"}])
        state_sql("UPDATE session_meta SET updated_at = updated_at - 7200 WHERE id = ?", (old.id,))
        wait_for(lambda: _gone(sdk, old.id))
        left = state_sql("SELECT count(*) FROM session_items WHERE session_key = ?", (old.id,))[0][0]
        assert left == 0
        assert sdk.conversations.retrieve(fresh.id).id == fresh.id
        sdk.close()


def _gone(sdk: openai.OpenAI, conversation_id: str) -> bool:
    try:
        sdk.conversations.retrieve(conversation_id)
    except openai.NotFoundError:
        return True
    return False


def test_conversation_retention_follows_retention_unless_set(make_app):
    from plugins.openresponses.conversations.service import retention_seconds
    from plugins.openresponses.settings import OpenResponsesSettings

    def seconds(**options: str) -> float | None:
        return retention_seconds(OpenResponsesSettings(**options))

    assert seconds() == 30 * 86400
    assert seconds(retention="2h") == 7200
    assert seconds(retention="2h", conversation_retention="none") is None
    assert seconds(conversation_retention="90d") == 90 * 86400
    with pytest.raises(ConfigError) as err:
        stored_app(make_app, conversation_retention="ninety days")
    assert "conversation_retention" in str(err.value)
