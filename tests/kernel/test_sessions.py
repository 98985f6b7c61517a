"""Session keys, durable transcripts in SQLite, and serialised runs on one session."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest
from werkzeug.datastructures import Headers

from kernel import ApiError, Message, TextPart, ToolCall, ToolResult, Turn
from kernel.sessions import MAX_SESSION_KEY_LENGTH, derive_session_key, main_session_key, validate_session_key
from kernel.store import DB_FILE
from kernel.testing import AUTH_HEADERS


def user(text: str) -> Message:
    return Message(role="user", parts=[TextPart(text)])


@pytest.mark.parametrize("key", ["a", "agent:main:chat-user:alice", "x" * MAX_SESSION_KEY_LENGTH, "ключ ✓"])
def test_valid_session_keys_are_used_as_given(key):
    assert validate_session_key(key) == key
    assert derive_session_key(Headers({"x-session-key": key}), agent="main", surface="chat", user="bob") == key


@pytest.mark.parametrize("key", ["", "x" * (MAX_SESSION_KEY_LENGTH + 1), "a\nb", "tab\there", "nul\x00", "\x7f"])
def test_invalid_session_keys_are_a_400_naming_the_header(key):
    with pytest.raises(ApiError) as info:
        derive_session_key({"x-session-key": key}, agent="main", surface="chat", user=None)
    assert info.value.status == 400
    assert info.value.param == "x-session-key"
    assert info.value.code == "invalid_session_key"
    assert str(MAX_SESSION_KEY_LENGTH) in info.value.message


def test_a_user_derives_a_stable_key():
    key = derive_session_key({}, agent="main", surface="responses", user="alice")
    assert key == "agent:main:responses-user:alice"
    assert derive_session_key({}, agent="main", surface="responses", user="alice") == key
    assert derive_session_key({}, agent="ops", surface="chat", user="alice") == "agent:ops:chat-user:alice"


def test_a_bad_user_value_is_a_400_naming_user():
    with pytest.raises(ApiError) as info:
        derive_session_key({}, agent="main", surface="chat", user="u" * 300)
    assert (info.value.status, info.value.param) == (400, "user")


def test_without_key_or_user_each_request_gets_a_fresh_session():
    keys = {derive_session_key({}, agent="main", surface="chat", user=None) for _ in range(5)}
    assert len(keys) == 5
    assert all(k.startswith("agent:main:chat:") for k in keys)


def test_main_session_key():
    assert main_session_key("main") == "agent:main:main"


async def test_transcripts_persist_across_app_restarts_in_a_sqlite_file(make_app, running, tmp_path):
    config = {"providers": {"seer": {"kind": "echo", "mode": "transcript"}}, "agents": {"seer": {"provider": "seer"}},
              "kernel": {"store": {"url": "sqlite"}}}  # about the SQLite file, whichever backend the run tests
    async with running(make_app(config)) as (kernel, _):
        turn = Turn(agent="main", input=[user("remember the tides")], session_key="s-1")
        first = await kernel.runs.start(turn).wait()
        assert first.text == "remember the tides"
        call = ToolCall(call_id="c1", name="lookup", arguments='{"q": "tides"}')
        await kernel.sessions.append("s-1", [call, ToolResult(call_id="c1", output="high at noon")])

    db = tmp_path / "state" / DB_FILE
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT session_key, seq FROM session_items ORDER BY seq").fetchall()
    assert rows == [("s-1", 0), ("s-1", 1), ("s-1", 2), ("s-1", 3)]

    async with running(make_app(config)) as (kernel, _):  # a new app, same state dir
        loaded = await kernel.sessions.load("s-1")
        assert loaded == [user("remember the tides"), Message("assistant", [TextPart("remember the tides")]), call,
                          ToolResult(call_id="c1", output="high at noon")]
        second = await kernel.runs.start(Turn(agent="seer", input=[user("what did I say?")], session_key="s-1")).wait()
        assert second.text.splitlines() == [
            "user: remember the tides",
            "assistant: remember the tides",
            'tool_call lookup({"q": "tides"}) [c1]',
            "tool_result [c1]: high at noon",
            "user: what did I say?",
        ]
        assert len(await kernel.sessions.load("s-1")) == 6
        assert await kernel.sessions.load("other") == []
        await kernel.sessions.clear("s-1")
        assert await kernel.sessions.load("s-1") == []


async def test_runs_without_a_session_key_store_nothing(make_app, running, tmp_path):
    async with running(make_app()) as (kernel, _):
        await kernel.runs.start(Turn(agent="main", input=[user("ephemeral")])).wait()
        assert await kernel.store.fetchall("SELECT * FROM session_items") == []


async def test_concurrent_runs_on_one_session_are_serialised(make_app, running):
    config = {"providers": {"slow": {"kind": "echo", "delay_seconds": 0.01}}, "agents": {"slow": {"provider": "slow"}}}
    async with running(make_app(config)) as (kernel, _):
        texts = [" ".join(f"{tag}{i}" for i in range(6)) for tag in "abcd"]
        runs = [kernel.runs.start(Turn(agent="slow", input=[user(t)], session_key="busy")) for t in texts]
        results = await asyncio.gather(*(r.wait() for r in runs))
        assert [r.text for r in results] == texts
        # Never interleaved: each run started after the previous one finished ...
        for earlier, later in itertools.pairwise(runs):
            assert later.started_at >= earlier.finished_at
        # ... so each saw the whole transcript before it, and the transcript is in pairs.
        transcript = await kernel.sessions.load("busy")
        assert [(m.role, m.text) for m in transcript] == [
            pair for t in texts for pair in (("user", t), ("assistant", t))
        ]
        assert [len(r.turn.history) for r in runs] == [0, 2, 4, 6]


async def test_concurrent_requests_on_one_session_over_http(make_app, running):
    config = {
        "plugins": {"example": {"enabled": True}},
        "providers": {"slow": {"kind": "echo", "delay_seconds": 0.01}},
        "agents": {"main": {"provider": "slow"}},
    }
    async with running(make_app(config)) as (kernel, client):
        headers = {**AUTH_HEADERS, "x-session-key": "shared"}
        names = [f"n{i}" for i in range(4)]
        responses = await asyncio.gather(*(client.get(f"/example/hello?name={n}", headers=headers) for n in names))
        assert all(r.status_code == 200 for r in responses)
        transcript = [m.text for m in await kernel.sessions.load("shared")]
        assert len(transcript) == 8
        for i in range(0, 8, 2):  # user then its own answer, never another request's words
            assert transcript[i] == transcript[i + 1]
        assert sorted(transcript[::2]) == [f"hello {n}" for n in names]
        by_user = await client.get("/example/hello?name=z&user=kim", headers=AUTH_HEADERS)
        assert (await by_user.get_json())["session_key"] == "agent:main:example-user:kim"
        bad = await client.get("/example/hello", headers={**AUTH_HEADERS, "x-session-key": "a\tb"})
        assert bad.status_code == 400
        assert (await bad.get_json())["error"]["param"] == "x-session-key"


async def test_different_sessions_run_in_parallel(make_app, running):
    config = {"providers": {"slow": {"kind": "echo", "delay_seconds": 0.05}}, "agents": {"slow": {"provider": "slow"}}}
    async with running(make_app(config)) as (kernel, _):
        a = kernel.runs.start(Turn(agent="slow", input=[user("a b c d")], session_key="one"))
        b = kernel.runs.start(Turn(agent="slow", input=[user("a b c d")], session_key="two"))
        await asyncio.gather(a.wait(), b.wait())
        assert b.started_at < a.finished_at


async def test_a_cancelled_run_releases_its_session(make_app, running):
    config = {"providers": {"slow": {"kind": "echo", "delay_seconds": 0.05}}, "agents": {"slow": {"provider": "slow"}}}
    async with running(make_app(config)) as (kernel, _):
        stuck = kernel.runs.start(Turn(agent="slow", input=[user("w " * 200)], session_key="k"))
        waiting = kernel.runs.start(Turn(agent="main", input=[user("next")], session_key="k"))
        async for ev in stuck.events():
            if ev.kind == "text_delta":
                break
        assert waiting.status == "queued"
        stuck.cancel()
        result = await asyncio.wait_for(waiting.wait(), 5)
        assert result.text == "next"
        assert stuck.status == "cancelled"
        roles = [(m.role, m.text.split()[:1]) for m in await kernel.sessions.load("k")]
        # The cancelled run's input and partial answer are kept, then the next run's pair.
        assert roles[0] == ("user", ["w"]) and roles[1][0] == "assistant" and roles[2:] == [
            ("user", ["next"]), ("assistant", ["next"])]


async def test_a_run_cancelled_while_queued_is_withdrawn_from_the_transcript(make_app, running):
    config = {"providers": {"slow": {"kind": "echo", "delay_seconds": 0.05}}, "agents": {"slow": {"provider": "slow"}}}
    async with running(make_app(config)) as (kernel, _):
        first = kernel.runs.start(Turn(agent="slow", input=[user("one two three")], session_key="k"))
        queued = kernel.runs.start(Turn(agent="main", input=[user("withdrawn")], session_key="k"))
        async for ev in first.events():
            if ev.kind == "text_delta":
                break
        assert queued.status == "queued"
        assert queued.cancel() is True
        result = await asyncio.wait_for(queued.wait(), 5)
        assert result.status == "cancelled" and result.output == [] and queued.started_at is None
        assert (await asyncio.wait_for(first.wait(), 5)).text == "one two three"
        after = kernel.runs.start(Turn(agent="main", input=[user("after")], session_key="k"))
        await after.wait()
        texts = [(m.role, m.text) for m in await kernel.sessions.load("k")]
        # The model never saw the withdrawn turn, and neither does the transcript: the first
        # turn's pair, then the next one's, in the order they ran.
        assert texts == [("user", "one two three"), ("assistant", "one two three"),
                         ("user", "after"), ("assistant", "after")]
        assert all("withdrawn" not in item.text for item in after.turn.history)
