"""Upstream faults end to end: clear errors, retries only before the first byte, output
that was already streamed kept, and the upstream connection always closed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from testsupport.fake_openai import (
    chunk,
    error_reply,
    hang_reply,
    reset_reply,
    stream_reply,
    text_chunks,
)

from kernel import Failed, TextDelta
from kernel.app import get_kernel
from kernel.testing import free_port

from .conftest import API_KEY


def label(fake) -> str:
    return f"provider 'up' (127.0.0.1:{fake.port})"


async def wait_disconnect(request, within: float = 5.0) -> bool:
    """Whether the fake saw the client close this request's connection."""
    return await asyncio.to_thread(request.disconnected.wait, within)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (404, "not_found_error"),
                                              (413, "invalid_request_error"), (422, "invalid_request_error")])
async def test_client_errors_pass_through_with_the_upstream_message(upstream_app, fake, user_turn, run_turn,
                                                                    status, kind):
    app = upstream_app()
    fake.script(error_reply(status, "Invalid value for 'temperature': must be <= 2.", code="invalid_value",
                            param="temperature"))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
    assert events == [Failed(result.error)]
    err = result.error
    assert (err.status, err.type, err.code, err.param) == (status, kind, "invalid_value", "temperature")
    assert err.message == (f"{label(fake)} answered HTTP {status}: Invalid value for 'temperature': must be <= 2.")
    assert len(fake.chat_requests) == 1  # a client error is never retried


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_gateway_key_becomes_502(upstream_app, fake, user_turn, run_turn, status):
    app = upstream_app()
    fake.script(error_reply(status, "Incorrect API key provided: sk-test-****4242.", code="invalid_api_key"))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert err is not None and err.status == 502 and err.code == "upstream_auth_failed"
    assert f"{label(fake)} rejected the gateway's credentials (HTTP {status})" in err.message
    assert "Incorrect API key provided" in err.message and "api_key" in err.message
    assert API_KEY not in err.message
    assert len(fake.chat_requests) == 1


async def test_5xx_is_retried_then_fails_naming_the_upstream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=2)
    fake.script(*[error_reply(503, "model is overloaded", type="server_error")] * 3)
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert len(fake.chat_requests) == 3
    err = result.error
    assert (err.status, err.code) == (502, "upstream_error")
    assert err.message == f"{label(fake)} answered HTTP 503: model is overloaded"
    # Every attempt sent the same body.
    assert len({r.body for r in fake.chat_requests}) == 1


async def test_500_then_success_is_retried(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=1)
    fake.script(error_reply(500, "oops", type="server_error"), stream_reply(text_chunks("fine")))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.status, result.text, len(fake.chat_requests)) == ("completed", "fine", 2)


async def test_429_retry_after_is_honoured_then_succeeds(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=1)  # backoff alone would wait at most 0.05s
    fake.script(error_reply(429, "Rate limit reached", type="rate_limit_error", retry_after=0.4),
                stream_reply(text_chunks("after the wait")))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    first, second = fake.chat_requests
    assert result.text == "after the wait"
    assert second.received_at - first.received_at >= 0.4


async def test_429_with_a_long_retry_after_fails_at_once_with_429(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=3, max_retry_after=5)
    fake.script(error_reply(429, "Rate limit reached", type="rate_limit_error", retry_after=120))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code, err.retry_after) == (429, "upstream_rate_limited", 120)
    assert "Rate limit reached" in err.message and len(fake.chat_requests) == 1


async def test_429_retries_exhausted_keeps_429(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=1)
    fake.script(*[error_reply(429, "slow down", type="rate_limit_error", retry_after=0)] * 2)
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.error.status, len(fake.chat_requests)) == (429, 2)


async def test_connection_refused_is_retried_then_502(make_app, user_turn, run_turn, caplog):
    from .conftest import upstream_config

    caplog.set_level(logging.WARNING, logger="plugins.openai_upstream")
    port = free_port()  # nothing listens there
    app = make_app(upstream_config(f"http://127.0.0.1:{port}/v1", max_retries=2))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code) == (502, "upstream_connection_error")
    assert err.message.startswith(f"provider 'up' (127.0.0.1:{port}): request failed before a response: ConnectError")
    retries = [r.getMessage() for r in caplog.records if "request failed before a response" in r.getMessage()]
    assert [m.split("; ")[-1].split(" in ")[0] for m in retries] == ["retry 1/2", "retry 2/2"]
    assert all(m.count("provider 'up'") == 1 for m in retries)  # named once, with its host


async def test_connection_reset_before_the_response_is_retried(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=2)
    fake.script(reset_reply(), reset_reply(), stream_reply(text_chunks("third time lucky")))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "third time lucky")
    assert len(fake.chat_requests) == 3 and len({r.body for r in fake.chat_requests}) == 1


async def test_connection_resets_past_max_retries_fail_with_502(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=1)
    fake.script(reset_reply(), reset_reply(), stream_reply(text_chunks("never asked for")))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code) == (502, "upstream_connection_error")
    assert err.message.startswith(f"{label(fake)}: request failed before a response: RemoteProtocolError")
    assert len(fake.chat_requests) == 2


# --------------------------------------------------------------------------- timeouts


async def test_hang_before_headers_times_out_with_504(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(read_timeout=0.3)
    fake.script(hang_reply())
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code) == (504, "upstream_timeout")
    assert err.message == f"{label(fake)}: sent no response within read_timeout = 0.3s"
    assert len(fake.chat_requests) == 1  # a timeout is not retried: the model may be busy on it
    assert await wait_disconnect(fake.chat_requests[0])


async def test_stall_mid_stream_keeps_the_streamed_text(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(read_timeout=0.3)
    fake.script(stream_reply([chunk({"content": "Hel"}), chunk({"content": "lo"})], end="hang"))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")] and events[-1].kind == "failed"
    assert (result.status, result.text) == ("failed", "Hello")
    assert result.error.status == 504
    assert result.error.message == (f"{label(fake)}: stream stalled: no data for read_timeout = 0.3s "
                                    "after 2 chunk(s)")
    assert await wait_disconnect(fake.chat_requests[0])


async def test_total_timeout_bounds_a_trickling_stream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(read_timeout=5, total_timeout=0.5)
    fake.script(stream_reply(text_chunks(*["word "] * 100), delay=0.05))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.status == "failed" and result.error.status == 504
    assert "total_timeout = 0.5s exceeded while streaming" in result.error.message
    assert result.text.startswith("word word")
    assert await wait_disconnect(fake.chat_requests[0])


# --------------------------------------------------------------------------- broken streams


async def test_dropped_connection_mid_stream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply([chunk({"content": "partial "}), chunk({"content": "answer"})], end="drop"))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
    assert [e.kind for e in events] == ["text_delta", "text_delta", "failed"]
    assert (result.status, result.text) == ("failed", "partial answer")
    err = result.error
    assert (err.status, err.code) == (502, "upstream_connection_error")
    assert err.message.startswith(f"{label(fake)}: the connection dropped mid-stream after 2 chunk(s): "
                                  "RemoteProtocolError")
    assert len(fake.chat_requests) == 1  # a started stream is never replayed


async def test_malformed_chunk_fails_and_closes_the_stream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply([chunk({"content": "ok so far"}), '{"choices": [{"delta": {"content": "x"', chunk(
        {"content": "never read"})], delay=0.05, end="hang"))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (result.status, result.text) == ("failed", "ok so far")
    assert (err.status, err.code) == (502, "upstream_bad_response")
    assert err.message.startswith(f"{label(fake)}: sent a malformed stream chunk after 1 good chunk(s) (not JSON:")
    assert await wait_disconnect(fake.chat_requests[0])


async def test_error_event_mid_stream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply([chunk({"content": "a"}), {"error": {"message": "provider crashed", "code": 502}}]))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.text == "a" and result.error.status == 502
    assert result.error.message == f"{label(fake)} reported an error mid-stream after 1 chunk(s): provider crashed"


async def test_stream_that_ends_without_finishing(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply([chunk({"content": "half"})], done=False))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("failed", "half")
    assert "the stream ended after 1 chunk(s) without a finish reason or [DONE]" in result.error.message


async def test_connection_is_released_after_every_fault(upstream_app, fake, user_turn, run_turn):
    """One connection and one slot: a fault that leaked either would block the next run."""
    app = upstream_app(max_concurrency=1, max_retries=0, total_timeout=5, read_timeout=0.3)
    fake.script(
        error_reply(400, "bad"),
        stream_reply([chunk({"content": "x"})], end="drop"),
        stream_reply([chunk({"content": "x"}), "not json"], end="hang"),
        stream_reply([chunk({"content": "x"})], end="hang"),
        error_reply(500, "boom"),
        stream_reply(text_chunks("still works")),
    )
    async with app.test_app():
        statuses = [(await run_turn(app, user_turn()))[1].error.status for _ in range(5)]
        _, last = await run_turn(app, user_turn())
    assert statuses == [400, 502, 502, 504, 502]
    assert last.text == "still works"


def busy_connections(app) -> int:
    """Upstream connections with a request still in flight (the client's pool view:
    a connection is acquired until its response is released or closed)."""
    return get_kernel(app).providers["up"]._client.in_use


@pytest.mark.parametrize("reply", [
    stream_reply(text_chunks("done")),
    stream_reply([chunk({"content": "x"}), "not json", chunk({"content": "y"})], end="hang"),
    stream_reply([chunk({"content": "x"}), {"error": {"message": "crash"}}], end="hang"),
    stream_reply([chunk({"content": "x"})], done=False),
    error_reply(400, "bad"),
], ids=["success", "malformed", "error-event", "no-finish", "http-400"])
async def test_response_is_closed_before_the_terminal_event(upstream_app, fake, user_turn, reply):
    """Closing is deterministic (not left to garbage collection of abandoned generators)."""
    app = upstream_app(max_retries=0)
    fake.script(reply)
    seen: list[int] = []
    async with app.test_app():
        run = get_kernel(app).runs.start(user_turn())
        run.listeners.append(lambda r, ev: seen.append(busy_connections(app)) if ev.kind in (
            "finished", "failed") else None)
        await run.wait()
    assert seen == [0]


# --------------------------------------------------------------------------- cancellation & concurrency


async def test_cancel_closes_the_upstream_stream_at_once(upstream_app, fake, user_turn):
    app = upstream_app(read_timeout=60)
    fake.script(stream_reply([chunk({"content": "first words"})], end="hang"))
    async with app.test_app():
        run = get_kernel(app).runs.start(user_turn())
        async for ev in run.events():
            if isinstance(ev, TextDelta):
                break
        [request] = fake.chat_requests
        assert not request.disconnected.is_set()
        run.cancel()
        result = await run.wait()
        # read_timeout is 60s: only an immediate close explains the disconnect.
        assert await wait_disconnect(request)
    assert (result.status, result.finish_reason, result.text) == ("cancelled", "cancelled", "first words")


async def test_cancel_while_waiting_for_headers(upstream_app, fake, user_turn):
    app = upstream_app(read_timeout=60)
    fake.script(hang_reply())
    async with app.test_app():
        run = get_kernel(app).runs.start(user_turn())
        [request] = await asyncio.to_thread(fake.wait_for_requests, 1)
        run.cancel()
        assert (await run.wait()).status == "cancelled"
        assert await wait_disconnect(request)


async def test_max_concurrency_queues_extra_runs(upstream_app, fake, user_turn):
    app = upstream_app(max_concurrency=2, read_timeout=60)
    fake.script(*[stream_reply([chunk({"content": "busy"})], end="hang")] * 2, stream_reply(text_chunks("third")))
    async with app.test_app():
        kernel = get_kernel(app)
        runs = [kernel.runs.start(user_turn(f"q{i}")) for i in range(3)]
        await asyncio.to_thread(fake.wait_for_requests, 2)
        await asyncio.sleep(0.3)
        assert len(fake.chat_requests) == 2  # the third run waits for a slot
        runs[0].cancel()
        third = await asyncio.wait_for(runs[2].wait(), 10)
        runs[1].cancel()
        await runs[1].wait()
    assert third.text == "third" and len(fake.chat_requests) == 3


# --------------------------------------------------------------------------- secrets


async def test_key_and_bodies_never_reach_the_logs(upstream_app, fake, user_turn, run_turn, caplog):
    caplog.set_level(logging.DEBUG)
    app = upstream_app(max_retries=1)
    fake.script(error_reply(500, "upstream body detail"), stream_reply(text_chunks("secret answer text")),
                error_reply(401, "bad key"))
    async with app.test_app():
        await run_turn(app, user_turn("my private prompt"))
        _, failed = await run_turn(app, user_turn("my private prompt"))
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "retry 1/1" in logged  # the retry was logged (without the body)
    for secret in (API_KEY, "my private prompt", "secret answer text"):
        assert secret not in logged
    assert API_KEY not in failed.error.message
    provider = get_kernel(app).providers["up"]
    assert API_KEY not in repr(provider.options) and API_KEY not in str(provider.options.model_dump())
