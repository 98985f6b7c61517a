"""SSE plumbing: keep-alive pings, error propagation, and cancelling a run when the client leaves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kernel.streaming import PING, sse_response, with_keepalive
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
