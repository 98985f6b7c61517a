"""Everything the upstream sends is bounded: lines, events, whole bodies, error bodies,
compressed bodies, and the numbers in them (Retry-After, usage, tool-call indexes)."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import zlib

import pytest
from testsupport.fake_openai import (
    Reply,
    chunk,
    completion,
    endless_line_reply,
    error_reply,
    gzipped,
    json_reply,
    stream_reply,
    text_chunks,
    tool_call_chunks,
)

from kernel import RunError
from kernel.types import MAX_RETRY_AFTER_SECONDS
from plugins.openai_upstream.body import BodyDecoder
from plugins.openai_upstream.decode import ChunkDecoder, map_usage
from plugins.openai_upstream.faults import retry_after_seconds

SSE = {"content-type": "text/event-stream"}


def label(fake) -> str:
    return f"provider 'up' (127.0.0.1:{fake.port})"


async def wait_disconnect(request, within: float = 5.0) -> bool:
    return await asyncio.to_thread(request.disconnected.wait, within)


# --------------------------------------------------------------------------- event-stream lines


async def test_an_endless_line_fails_the_run_naming_the_limit(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_event_bytes=64 * 1024)
    fake.script(endless_line_reply([chunk({"content": "before "})]))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
    err = result.error
    assert (result.status, result.text, events[-1].kind) == ("failed", "before ", "failed")
    assert (err.status, err.code) == (502, "upstream_bad_response")
    assert err.message.startswith(f"{label(fake)}: sent a line of its event stream longer than "
                                  "max_event_bytes = 65536 bytes after 1 chunk(s)")
    assert await wait_disconnect(fake.chat_requests[0])  # the endless body is closed, not read on


async def test_an_endless_event_of_short_lines_fails_the_run(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_event_bytes=64 * 1024)
    fake.script(Reply(headers=SSE, forever=b"data: " + b"y" * 1000 + b"\n"))  # never a blank line
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.code == "upstream_bad_response"
    assert "sent an event of its event stream longer than max_event_bytes = 65536 bytes" in result.error.message
    assert await wait_disconnect(fake.chat_requests[0])


async def test_the_default_cap_lets_a_long_chunk_through(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("z" * 2_000_000)))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.status == "completed" and len(result.text) == 2_000_000


# --------------------------------------------------------------------------- compressed bodies


def test_body_decoder_never_yields_more_than_a_step():
    bomb = zlib.compress(b"x" * (32 * 1024 * 1024), 9, wbits=16 + zlib.MAX_WBITS)  # ~32 KiB -> 32 MiB
    decoder = BodyDecoder("gzip", step=64 * 1024)
    sizes = [len(piece) for piece in decoder.decode(bomb)]
    assert max(sizes) <= 64 * 1024 and sum(sizes) == 32 * 1024 * 1024
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = raw_deflate.compress(b"hello") + raw_deflate.flush()
    assert b"".join(BodyDecoder("deflate").decode(data)) == b"hello"
    assert b"".join(BodyDecoder("deflate").decode(zlib.compress(b"hello"))) == b"hello"


async def test_a_gzipped_stream_is_decoded(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(gzipped(stream_reply(text_chunks("squeezed", " text"))))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "squeezed text")
    assert fake.chat_requests[0].headers["accept-encoding"] == "gzip, deflate"


async def test_a_gzip_bomb_stream_fails_at_the_line_cap(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_event_bytes=64 * 1024)
    fake.script(gzipped(Reply(headers=SSE, pieces=[b"data: " + b"x" * (64 * 1024 * 1024)])))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.code == "upstream_bad_response"
    assert "longer than max_event_bytes = 65536 bytes" in result.error.message


async def test_a_gzipped_error_body_is_read_as_text(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(gzipped(error_reply(400, "temperature is too high", param="temperature")))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.message == f"{label(fake)} answered HTTP 400: temperature is too high"


async def test_an_encoding_not_offered_fails_naming_it(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("x"), headers={"content-encoding": "br"}))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.code == "upstream_bad_response"
    assert "answered with Content-Encoding br although only gzip, deflate was offered" in result.error.message


# --------------------------------------------------------------------------- whole bodies


async def test_a_whole_completion_over_max_response_bytes_fails(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_response_bytes=4096)
    fake.script(json_reply(completion("w" * 10_000)))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.code == "upstream_bad_response"
    assert result.error.message == (f"{label(fake)}: sent a whole completion over max_response_bytes = 4096 bytes; "
                                    "raise max_response_bytes in this [providers] table if that is expected")


async def test_a_huge_error_body_is_read_only_in_part(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(max_retries=0)
    fake.script(Reply(status=500, headers={"content-type": "text/plain"}, forever=b"e" * 65536))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.error.status == 502 and result.error.message.endswith("e" * 500 + "...")
    assert await wait_disconnect(fake.chat_requests[0])  # stopped reading the endless body


# --------------------------------------------------------------------------- Retry-After


YEAR_9999 = "Fri, 31 Dec 9999 23:59:59 GMT"
LAST_YEAR = email.utils.formatdate(time.time() - 365 * 86400, usegmt=True)


@pytest.mark.parametrize(("header", "seconds"), [
    ("inf", MAX_RETRY_AFTER_SECONDS), ("1e999", MAX_RETRY_AFTER_SECONDS), ("-inf", 0.0),
    ("1e300", MAX_RETRY_AFTER_SECONDS), ("-5", 0.0), ("nan", None), ("garbage", None), ("", None),
    (YEAR_9999, MAX_RETRY_AFTER_SECONDS), (LAST_YEAR, 0.0), ("2.5", 2.5),
])
def test_retry_after_is_finite_and_bounded(header, seconds):
    assert retry_after_seconds({"retry-after": header}) == seconds


@pytest.mark.parametrize(("header", "seconds"), [
    ("inf", MAX_RETRY_AFTER_SECONDS), ("1e999", MAX_RETRY_AFTER_SECONDS), ("-5", 0.0), ("nan", None),
    ("garbage", None), ("2500", 2.5),
])
def test_retry_after_ms_is_finite_and_bounded(header, seconds):
    assert retry_after_seconds({"retry-after-ms": header}) == seconds


def test_retry_after_in_an_http_date():
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3590 < retry_after_seconds({"retry-after": in_an_hour}) <= 3600


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e300, -5.0])
def test_a_run_error_keeps_retry_after_finite(value):
    err = RunError("busy", status=429, retry_after=value)
    assert err.retry_after is not None and 0 <= err.retry_after <= MAX_RETRY_AFTER_SECONDS
    assert 1 <= int(err.retry_after_header()) <= MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize(("header", "requests", "retry_after"), [
    ("inf", 1, MAX_RETRY_AFTER_SECONDS), ("1e999", 1, MAX_RETRY_AFTER_SECONDS), (YEAR_9999, 1, MAX_RETRY_AFTER_SECONDS),
    ("garbage", 3, 1.0), ("-5", 3, 0.0),
])
async def test_429_with_a_hostile_retry_after_is_a_429(upstream_app, fake, user_turn, run_turn, header, requests,
                                                        retry_after):
    app = upstream_app(max_retries=2)
    fake.script(*[error_reply(429, "slow down", type="rate_limit_error", retry_after=header)] * 3)
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code, err.retry_after) == (429, "upstream_rate_limited", retry_after)
    assert len(fake.chat_requests) == requests  # too long is not waited for; unreadable means back off


# --------------------------------------------------------------------------- numbers in chunks


def test_usage_numbers_out_of_range_count_as_missing():
    usage = map_usage({"prompt_tokens": 10**400, "completion_tokens": -3, "prompt_tokens_details": {
        "cached_tokens": True}, "completion_tokens_details": {"reasoning_tokens": 2**40}})
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens) == (0, 0, 0, 0)
    assert map_usage({"prompt_tokens": 12, "completion_tokens": 3}).total_tokens == 15


async def test_a_huge_usage_number_does_not_reach_the_run(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("ok", usage_={"prompt_tokens": 10**30, "completion_tokens": 4})))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.status == "completed"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (0, 4)


def test_a_tool_call_index_out_of_range_is_treated_as_missing():
    decoder = ChunkDecoder()
    for piece in tool_call_chunks([("call_1", "f", '{"a": 1}')]):
        for call in piece.get("choices", [{}])[0].get("delta", {}).get("tool_calls") or []:
            call["index"] = 10**30
        decoder.feed(piece)
    assert list(decoder.calls) == [0] and decoder.calls[0].arguments == '{"a": 1}'
