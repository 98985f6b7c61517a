"""SSE plumbing: keep-alive pings, error propagation, and cancelling a run when the client leaves."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from quart import Blueprint

from kernel import Message, TextPart, Turn, hookimpl
from kernel.streaming import PING, ResponseWatch, sse_response, when_client_leaves, with_keepalive
from kernel.testing import AUTH_HEADERS


async def gen(chunks: list[bytes], pause: float = 0.0, fail: Exception | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(pause)
        yield chunk
    if fail is not None:
        raise fail


async def test_keepalive_pings_during_silence_and_keeps_order():
    out = [c async for c in with_keepalive(gen([b"a", b"b"], pause=0.12), interval=0.05)]
    data = [c for c in out if c != PING]
    assert data == [b"a", b"b"]
    assert out.count(PING) >= 2
    assert out.index(b"a") > 0  # pinged while waiting for the first chunk


async def test_no_pings_when_the_source_is_chatty():
    out = [c async for c in with_keepalive(gen([b"x"] * 20), interval=5)]
    assert out == [b"x"] * 20


async def test_a_source_error_reaches_the_consumer_after_its_chunks():
    got: list[bytes] = []
    with pytest.raises(ValueError, match="source broke"):
        async for chunk in with_keepalive(gen([b"1", b"2"], fail=ValueError("source broke")), interval=5):
            got.append(chunk)
    assert got == [b"1", b"2"]


async def test_sse_response_headers_and_completion_without_disconnect():
    called: list[bool] = []
    response = sse_response(gen([b"data: 1\n\n"]), on_disconnect=lambda: called.append(True),
                            headers={"x-extra": "yes"}, status=201)
    assert response.status_code == 201
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["x-extra"] == "yes"
    body = b"".join([c async for c in response.response])
    assert body == b"data: 1\n\n"
    assert called == []


def slow_echo(delay: float) -> dict:
    return {
        "plugins": {"example": {"enabled": True}},
        "providers": {"slow": {"kind": "echo", "delay_seconds": delay}},
        "agents": {"main": {"provider": "slow"}},
    }


def test_a_full_stream_over_the_wire(make_app, live_server):
    with live_server(make_app(slow_echo(0.0))) as base:
        with httpx.stream("GET", f"{base}/example/stream", params={"text": "one two three"},
                          headers=AUTH_HEADERS) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events == [{"delta": "one "}, {"delta": "two "}, {"delta": "three"}, {"done": "completed"}]


def test_a_client_that_leaves_cancels_its_run(make_app, live_server):
    app = make_app(slow_echo(0.05))
    kernel = app.extensions["kernel"]
    with live_server(app) as base:
        with httpx.stream("GET", f"{base}/example/stream", params={"text": "w " * 400},
                          headers=AUTH_HEADERS) as response:
            run_id = response.headers["x-run-id"]
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break  # read one delta, then hang up
        run = kernel.runs.get(run_id)
        deadline = time.monotonic() + 10
        while not run.done and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.status == "cancelled"
        assert run.events_log[-1].kind == "finished" and run.finish_reason == "cancelled"
        assert sum(ev.kind == "text_delta" for ev in run.events_log) < 400


class StallsBeforeTheBody:
    """A stream whose response stalls in ``after_request``, so its body has not started
    when the client hangs up (the window a body generator's own ``finally`` cannot see)."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.runs: list[Any] = []

    @hookimpl
    def register_routes(self, kernel, settings):
        bp = Blueprint("stall", __name__)

        @bp.get("/stall/stream")
        async def stream():
            run = kernel.runs.start(Turn(agent="main", input=[Message("user", [TextPart("w " * 50)])]))
            self.runs.append(run)

            async def chunks() -> AsyncIterator[bytes]:
                async for ev in run.events():
                    yield f"data: {ev.kind}\n\n".encode()

            return sse_response(chunks(), on_disconnect=run.cancel)

        @bp.after_request
        async def stall(response):
            self.stalled.set()
            await asyncio.Event().wait()  # until the client leaves and Quart cancels the request
            return response

        return [bp]


def test_a_client_that_leaves_before_the_body_starts_cancels_its_run(make_app, live_server):
    plugin = StallsBeforeTheBody()
    # 60 s per word: without the cancel, the run would still be going long after the wait below.
    config = {"providers": {"slow": {"kind": "echo", "delay_seconds": 60}}, "agents": {"main": {"provider": "slow"}}}
    app = make_app(config, extra_plugins={"stall": plugin})
    with live_server(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET /stall/stream HTTP/1.1\r\nHost: {host}\r\n"
                         f"Authorization: {AUTH_HEADERS['Authorization']}\r\n\r\n".encode())
            assert plugin.stalled.wait(10), "the request never reached after_request"
        (run,) = plugin.runs
        deadline = time.monotonic() + 10
        while not run.done and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.status == "cancelled" and run.finish_reason == "cancelled"


async def _watched(app, *, callbacks: int = 1) -> list[str]:
    """Run an ASGI app through ResponseWatch with callbacks registered; which ones fired."""
    fired: list[str] = []

    async def inner(scope, receive, send):
        for i in range(callbacks):
            scope["kernel.response_watch"].append(lambda i=i: fired.append(f"cb{i}"))
        await app(scope, receive, send)

    async def send(message):
        return None

    async def receive():
        return {"type": "http.disconnect"}

    try:
        await ResponseWatch(inner)({"type": "http"}, receive, send)
    except (asyncio.CancelledError, RuntimeError):
        pass
    return fired


async def test_the_watch_fires_only_for_responses_that_did_not_complete():
    async def complete(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"all", "more_body": False})

    async def cut_mid_body(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise asyncio.CancelledError

    async def cut_before_start(scope, receive, send):
        raise asyncio.CancelledError

    async def broken(scope, receive, send):
        raise RuntimeError("view failed")

    assert await _watched(complete) == []
    assert await _watched(cut_mid_body, callbacks=2) == ["cb0", "cb1"]
    assert await _watched(cut_before_start) == ["cb0"]
    assert await _watched(broken) == ["cb0"]


async def test_on_disconnect_runs_once_and_never_after_a_delivered_stream(make_app, running):
    called: list[str] = []
    async with running(make_app()) as (_, client):
        app = client.app
        async with app.test_request_context("/", scope_base={"kernel.response_watch": []}):
            from quart import request

            response = sse_response(gen([b"data: 1\n\n"]), on_disconnect=lambda: called.append("x"))
            (registered,) = request.scope["kernel.response_watch"]
            assert b"".join([c async for c in response.response]) == b"data: 1\n\n"
            registered()  # e.g. the final empty body message failed after the whole stream went out
            assert called == []
            response = sse_response(gen([b"a", b"b"], pause=0.01), on_disconnect=lambda: called.append("y"))
            _, registered = request.scope["kernel.response_watch"]
            body = response.response.__aiter__()
            assert await body.__anext__() == b"a"
            await body.aclose()  # the client left mid-stream: the body's finally runs the callback
            registered()  # and the watch does not run it twice
            assert called == ["y"]
    when_client_leaves(lambda: called.append("z"))  # outside a request: nothing to watch, no error
    assert called == ["y"]
