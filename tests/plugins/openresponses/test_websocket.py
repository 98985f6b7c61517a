"""WebSocket mode on /v1/responses over a real Hypercorn, with the ``websockets`` client.

Every server message is validated against the published schemas (events against the
streamed-event union, errors against ``WebSocketErrorEvent``). The first seven tests
are the official suite's WebSocket cases.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testsupport.spec import assert_valid
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread

from .conftest import TERMINAL, Server, check_events, wait_for
from .stored_support import OTHER_HEADERS, STORED_CONFIG, Probe, ProbePlugin, stored_app
from .ws_support import Socket, text_of

WS_CONFIG = merge(STORED_CONFIG, {
    "plugins": {"openresponses": {"max_body_bytes": 50_000}},
    "providers": {"broken": {"kind": "echo", "fail_after_words": 0}},
    "agents": {"broken": {"provider": "broken"}},
})


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("ws")
    app = build_app(merge(default_config(tmp / "state"), WS_CONFIG), tmp / "plugins.toml",
                    extra_plugins={"probe": ProbePlugin()})
    with serve_in_thread(app) as base:
        server = Server(base, app)
        yield server
        server.http.close()
        server.sdk.close()


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    return events[-1]["response"]


# --------------------------------------------------------------------------- the official cases


def test_single_turn(srv: Server) -> None:
    with Socket(srv.base) as ws:
        events = ws.turn({"model": "words", "input": "hello over a socket"})
    assert events[-1]["type"] == "response.completed"
    assert text_of(events) == "hello over a socket"
    assert final(events)["store"] is True and final(events)["model"] == "words"


def test_sequential_turns_on_one_connection(srv: Server) -> None:
    with Socket(srv.base) as ws:
        first = final(ws.turn({"input": "one"}))
        second = final(ws.turn({"input": "two", "previous_response_id": first["id"]}))
        third = ws.turn({"input": "three", "previous_response_id": second["id"]})
    assert text_of(third) == "user: one\nassistant: user: one\nuser: two\nassistant: user: one\nassistant: " \
        "user: one\nuser: two\nuser: three"
    # Stored turns chain as over HTTP, from any connection.
    over_http = srv.create({"input": "four", "previous_response_id": final(third)["id"]})
    assert over_http["output"][0]["content"][0]["text"].endswith("user: three\nassistant: " + text_of(third)
                                                                  + "\nuser: four")


def test_store_false_continuation_with_only_new_input(srv: Server) -> None:
    with Socket(srv.base) as ws:
        first = final(ws.turn({"input": "secret-a", "store": False}))
        assert first["store"] is False
        second = ws.turn({"input": "next", "previous_response_id": first["id"], "store": False})
    assert text_of(second) == "user: secret-a\nassistant: user: secret-a\nuser: next"
    # Nothing of it reached the store: over HTTP the id is unknown.
    resp = srv.post({"input": "x", "previous_response_id": first["id"]})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "previous_response_not_found"


def test_store_false_state_is_gone_after_a_reconnect(srv: Server) -> None:
    with Socket(srv.base) as ws:
        first = final(ws.turn({"input": "remember me", "store": False}))
    with Socket(srv.base) as ws:
        error = ws.error({"input": "again", "previous_response_id": first["id"], "store": False})
        assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"
        fresh = ws.turn({"input": "fresh start", "store": False})
    assert text_of(fresh) == "user: fresh start"


def test_previous_response_not_found_for_an_uncached_id(srv: Server) -> None:
    with Socket(srv.base) as ws:
        error = ws.error({"input": "x", "store": False, "previous_response_id": "resp_" + "0" * 32})
        assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"
        assert text_of(ws.turn({"input": "still usable", "store": False})) == "user: still usable"


def test_a_failed_continuation_evicts_the_cache(srv: Server) -> None:
    with Socket(srv.base) as ws:
        first = final(ws.turn({"input": "base", "store": False}))
        bad = ws.error({"store": False, "previous_response_id": first["id"],
                        "input": [{"type": "function_call_output", "call_id": "call_nobody_made", "output": "42"}]})
        assert bad["status"] == 400 and bad["error"]["param"] == "input[0].call_id"
        assert "call_nobody_made" in bad["error"]["message"]
        retry = ws.error({"input": "retry", "store": False, "previous_response_id": first["id"]})
        assert retry["status"] == 404 and retry["error"]["code"] == "previous_response_not_found"


def test_compaction_then_a_new_chain_from_the_compacted_output(srv: Server) -> None:
    with Socket(srv.base) as ws:
        first = final(ws.turn({"input": "the colour is teal", "store": False}))
        compacted = srv.http.post("/v1/responses/compact", json={
            "model": "main", "input": [{"role": "user", "content": "the colour is teal"}, *first["output"]]})
        assert compacted.status_code == 200, compacted.text
        assert_valid("CompactResource", compacted.json())
        window = compacted.json()["output"]
        assert window[-1]["type"] == "compaction"
        chained = final(ws.turn({"input": [*window, {"role": "user", "content": "what colour?"}], "store": False}))
        text = chained["output"][0]["content"][0]["text"]
        assert text.startswith("user: the colour is teal\nsystem: Summary of the earlier conversation")
        assert text.endswith("user: what colour?")
        follow = ws.turn({"input": "and then?", "store": False, "previous_response_id": chained["id"]})
    assert text_of(follow).endswith(f"user: what colour?\nassistant: {text}\nuser: and then?")


# --------------------------------------------------------------------------- warmup, ordering, routing


def test_generate_false_warmup_then_a_continuation(srv: Server) -> None:
    provider = srv.kernel.providers["t"]
    with Socket(srv.base) as ws:
        before = provider.turns_seen
        ws.send({"input": "the code word is plum", "instructions": "be brief", "store": False, "generate": False})
        events = ws.events()
        assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
        warm = final(events)
        assert warm["output"] == [] and warm["status"] == "completed" and warm["instructions"] == "be brief"
        assert provider.turns_seen == before, "a warmup makes no provider call"
        turn = ws.turn({"input": "say it", "store": False, "previous_response_id": warm["id"]})
    assert text_of(turn) == "user: the code word is plum\nuser: say it"
    assert provider.turns_seen == before + 1


def test_a_stored_warmup_chains_from_another_connection(srv: Server) -> None:
    with Socket(srv.base) as ws:
        ws.send({"input": "stored warmup", "generate": False})
        warm = final(ws.events())
    assert srv.http.get(f"/v1/responses/{warm['id']}").json()["output"] == []
    with Socket(srv.base) as ws:
        assert text_of(ws.turn({"input": "go", "previous_response_id": warm["id"]})) == "user: stored warmup\nuser: go"


def test_one_response_in_flight_per_connection(srv: Server) -> None:
    probe = Probe()
    with Socket(srv.base) as ws:
        ws.send({"model": "probe", "input": probe.key, "store": False})
        wait_for(probe.started.is_set)
        ws.send({"model": "words", "input": "cutting in"})
        events: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL:
            event = ws.recv()
            if event["type"] == "error" and "sequence_number" not in event:
                refused.append(event)
                probe.release.set()
            else:
                events.append(event)
        assert len(refused) == 1
        assert refused[0]["status"] == 409 and refused[0]["error"]["code"] == "response_already_in_flight"
        check_events(events)  # the running turn was not disturbed: one intact stream
        assert text_of(events) == "b0 b1 a0 a1 "
        assert text_of(ws.turn({"model": "words", "input": "my turn now"})) == "my turn now"


def test_upgrade_is_authenticated_like_http(srv: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as caught:
            Socket(srv.base, headers=headers)
        assert caught.value.response.status_code == 401
        assert json.loads(caught.value.response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(InvalidStatus) as caught:
        Socket(srv.base, headers={**AUTH_HEADERS, "x-agent-id": "nobody"})
    assert caught.value.response.status_code == 404
    with Socket(srv.base, headers={**AUTH_HEADERS, "x-agent-id": "words"}) as ws:
        assert text_of(ws.turn({"input": "routed by header"})) == "routed by header"


def test_agent_is_resolved_per_response_create(srv: Server) -> None:
    with Socket(srv.base) as ws:
        assert text_of(ws.turn({"model": "words", "input": "a b"})) == "a b"
        assert text_of(ws.turn({"model": "main", "input": "a b"})) == "user: a b"
        unknown = ws.error({"model": "agent:nobody", "input": "x"})
        assert unknown["status"] == 404 and unknown["error"]["param"] == "model"


def test_responses_belong_to_the_key_that_made_them(srv: Server) -> None:
    with Socket(srv.base) as ws:
        mine = final(ws.turn({"input": "mine"}))
    with Socket(srv.base, headers=OTHER_HEADERS) as ws:
        error = ws.error({"input": "x", "previous_response_id": mine["id"]})
    assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"


def test_session_key_rules_apply(srv: Server) -> None:
    with Socket(srv.base, headers={**AUTH_HEADERS, "x-session-key": "ws-session-1"}) as ws:
        ws.turn({"input": "first in session", "store": False})
        assert text_of(ws.turn({"input": "second", "store": False})).startswith("user: first in session")
    with Socket(srv.base, headers={**AUTH_HEADERS, "x-session-key": "k" * 300}) as ws:
        bad = ws.error({"input": "x"})
    assert bad["status"] == 400 and bad["error"]["param"] == "x-session-key"


# --------------------------------------------------------------------------- errors keep the socket usable


def test_bad_messages_answer_an_error_event_and_keep_the_connection(srv: Server) -> None:
    with Socket(srv.base) as ws:
        cases: list[tuple[Any, int, str | None]] = [
            ("{not json", 400, None),
            ("[1, 2]", 400, None),
            (json.dumps({"type": "response.cancel"}), 400, "type"),
            (json.dumps({"input": "no type"}), 400, "type"),
            ({"input": "x", "stream": True}, 400, "stream"),
            ({"input": "x", "stream_options": {}}, 400, "stream_options"),
            ({"input": "x", "background": False}, 400, "background"),
            ({"input": "x", "generate": "yes"}, 400, "generate"),
            ({"input": "x", "temperature": 5}, 400, "temperature"),
            ({"input": [{"type": "message", "role": "user", "content": 3}]}, 400, "input[0].content"),
            ("x" * 60_000, 413, None),
        ]
        for body, status, param in cases:
            error = ws.error(body)
            assert error["status"] == status and error["error"]["param"] == param, (body, error)
        assert text_of(ws.turn({"model": "words", "input": "still here"})) == "still here"


def test_a_failing_run_ends_with_the_spec_error_envelope(srv: Server) -> None:
    with Socket(srv.base) as ws:
        events = ws.turn({"model": "broken", "input": "x y"})
        assert events[-1]["type"] == "response.failed" and events[-2]["type"] == "error"
        assert_valid("WebSocketErrorEvent", events[-2])
        assert events[-2]["status"] == 500 and events[-2]["error"]["code"] == "provider_error"
        assert text_of(ws.turn({"model": "words", "input": "fine"})) == "fine"


def test_events_are_the_sse_events_byte_for_byte(srv: Server) -> None:
    body = {"model": "thinker" if "thinker" in srv.kernel.agents else "words", "input": "same bytes please",
            "store": False, "metadata": {"k": "v"}}
    with Socket(srv.base) as ws:
        ws.turn(body)
        socket_raw = list(ws.raw)
    stream = srv.stream(body)
    sse_data = [line[len("data: "):] for line in stream.raw.decode().split("\n") if line.startswith("data: {")]

    def normal(text: str) -> str:
        text = re.sub(r'"(resp|msg|rs|fc)_[0-9a-f]{32}"', r'"\1_X"', text)
        return re.sub(r'"(created_at|completed_at)":\d+', r'"\1":0', text)

    assert [normal(m) for m in socket_raw] == [normal(d) for d in sse_data]


# --------------------------------------------------------------------------- lifecycle and limits


def test_closing_the_socket_mid_turn_cancels_the_provider_call(srv: Server) -> None:
    probe = Probe()
    with Socket(srv.base) as ws:
        ws.send({"model": "probe", "input": probe.key})
        wait_for(probe.started.is_set)
    wait_for(probe.cancelled.is_set)
    assert probe.closed.is_set()


def test_connection_limit_sends_the_spec_error_then_closes(make_app: Any, live_server: Any) -> None:
    app = stored_app(make_app, websocket_max_connection_seconds=0.5)
    with live_server(app) as base, Socket(base) as ws:
        assert text_of(ws.turn({"model": "words", "input": "quick"})) == "quick"
        event = ws.recv(timeout=10)
        assert event["type"] == "error" and event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(ConnectionClosed) as closed:
            ws.conn.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_idle_connection_is_closed(make_app: Any, live_server: Any) -> None:
    app = stored_app(make_app, websocket_idle_timeout_seconds=0.3)
    with live_server(app) as base, Socket(base) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.conn.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "idle timeout"


def test_store_false_is_never_written(srv: Server) -> None:
    marker = "zdr-marker-7f3a"
    with Socket(srv.base) as ws:
        ws.send({"input": f"{marker} warm", "store": False, "generate": False})
        warm = final(ws.events())
        first = final(ws.turn({"input": f"{marker} one", "store": False, "previous_response_id": warm["id"]}))
        second = final(ws.turn({"input": f"{marker} two", "store": False, "previous_response_id": first["id"]}))
        # A stored turn after them: the store's writer keeps order, so once this one is
        # readable anything queued before it would have landed too.
        stored = final(ws.turn({"model": "words", "input": "a stored turn", "previous_response_id": second["id"]}))
    assert srv.http.get(f"/v1/responses/{stored['id']}").status_code == 200
    state = Path(srv.kernel.state_dir)
    db = sqlite3.connect(f"file:{state / 'kernel.sqlite3'}?mode=ro", uri=True)
    try:
        ids = [warm["id"], first["id"], second["id"]]
        rows = db.execute(f"SELECT id FROM or_responses WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        assert rows == []
        events = db.execute("SELECT count(*) FROM or_events WHERE response_id IN (?, ?, ?)", ids).fetchone()
        assert events == (0,)
    finally:
        db.close()
    for path in state.glob("kernel.sqlite3*"):
        assert marker.encode() not in path.read_bytes(), f"store: false content found in {path.name}"


def test_openai_sdk_drives_a_turn(srv: Server) -> None:
    import openai

    if not hasattr(openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9").responses, "connect"):
        pytest.skip(f"openai {openai.__version__} has no Responses WebSocket support")
    types: list[str] = []
    with srv.sdk.responses.connect() as conn:
        conn.response.create(model="words", input="through the sdk", store=False)
        text = ""
        for event in conn:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type in ("response.completed", "response.failed", "error"):
                break
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert text == "through the sdk"


def test_http_refuses_a_tool_output_that_answers_no_call(srv: Server) -> None:
    resp = srv.post({"input": [{"type": "function_call_output", "call_id": "call_ghost", "output": "1"}]})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "input[0].call_id" and "call_ghost" in error["message"]
    assert error["type"] == "invalid_request_error"
    ok = srv.post({"input": [
        {"type": "function_call", "call_id": "call_real", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_real", "output": "1"}]})
    assert ok.status_code == 200, ok.text


def test_pings_are_answered(srv: Server) -> None:
    # Keep-alive is client-driven (websockets and the SDK ping every 20 s by default): the
    # server answers each ping with a pong, mid-turn or idle.
    with Socket(srv.base) as ws:
        assert ws.conn.ping().wait(5)
        ws.turn({"model": "words", "input": "between pings"})
        assert ws.conn.ping().wait(5)
