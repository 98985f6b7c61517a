"""End to end over real HTTP: openai SDK -> POST /v1/chat/completions (live Hypercorn)
-> openai_upstream -> the fake upstream. Shapes are checked with the SDK's typed models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from testsupport.fake_openai import (
    FakeOpenAI,
    chunk,
    completion,
    endless_line_reply,
    error_reply,
    hang_reply,
    json_reply,
    reset_reply,
    stream_reply,
    text_chunks,
    tool_call_chunks,
    usage,
)

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, build_app, default_config, merge, serve_in_thread

from .conftest import API_KEY, HOSTILE_RETRY_AFTER, finite_retry_after, upstream_config

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


class Gateway:
    def __init__(self, base: str, fake: FakeOpenAI) -> None:
        self.base = base
        self.fake = fake
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("upstream-chat")
    with FakeOpenAI() as fake:
        config = merge(default_config(tmp / "state"), upstream_config(fake.base_url, read_timeout=30))
        config = merge(config, {
            # expose_reasoning: the upstream's reasoning comes back as reasoning_content.
            "plugins": {"chat_completions": {"enabled": True, "expose_reasoning": True}},
            # A second instance of the same kind, impatient and without retries.
            "providers": {"impatient": {"kind": "openai_upstream", "base_url": fake.base_url,
                                        "model": "small", "read_timeout": 0.3, "max_retries": 0}},
            "agents": {"impatient": {"provider": "impatient"}, "tight": {"provider": "tight"}},
        })
        # A third with a small event-stream cap, for the endless-line tests.
        config["providers"]["tight"] = {"kind": "openai_upstream", "base_url": fake.base_url, "model": "small",
                                        "max_event_bytes": 65536, "max_retries": 0}
        app = build_app(config, tmp / "plugins.toml")
        with serve_in_thread(app) as base:
            yield Gateway(base, fake)


@pytest.fixture
def gw(gateway: Gateway) -> Iterator[Gateway]:
    gateway.fake.reset()
    yield gateway
    gateway.fake.reset()


def test_streamed_text_usage_and_model_passthrough(gw):
    gw.fake.script(stream_reply(text_chunks("Hello", " from", " upstream", usage_=usage(11, 3))))
    chunks = list(gw.sdk.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}],
        stream=True, stream_options={"include_usage": True}, temperature=0.3, max_tokens=50))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from upstream"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) \
        == (11, 3)
    [req] = gw.fake.chat_requests
    body = req.json
    # A plain model name reaches the default agent and is used upstream.
    assert body["model"] == "llama3.2:1b"
    assert body["messages"] == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    assert (body["temperature"], body["max_tokens"], body["stream"]) == (0.3, 50, True)
    assert req.headers["authorization"] == f"Bearer {API_KEY}"  # the upstream key, not the gateway token


def test_parallel_tool_calls_over_the_wire(gw):
    calls = [("call_a", "get_weather", '{"city": "Oslo"}'), ("call_b", "get_time", "{}")]
    gw.fake.script(stream_reply(tool_call_chunks(calls, pieces=3)))
    chunks = list(gw.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "both"}], tools=[WEATHER, TIME],
        tool_choice="required", parallel_tool_calls=True, stream=True))
    args: dict[int, str] = {}
    ids: dict[int, tuple[str, str]] = {}
    for c in chunks:
        for piece in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if piece.id:
                ids[piece.index] = (piece.id, piece.function.name)
            args[piece.index] = args.get(piece.index, "") + (piece.function.arguments or "")
    assert ids == {0: ("call_a", "get_weather"), 1: ("call_b", "get_time")}
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"city": "Oslo"}, 1: {}}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    sent = gw.fake.chat_requests[0].json
    assert sent["tool_choice"] == "required" and [t["function"]["name"] for t in sent["tools"]] == [
        "get_weather", "get_time"]


def test_non_streaming_request_with_tool_history(gw):
    gw.fake.script(stream_reply(text_chunks("It is 4C in Oslo.", reasoning=["hidden"])))
    result = gw.sdk.chat.completions.create(model="agent:main", tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
    ])
    assert isinstance(result, ChatCompletion)
    assert result.choices[0].message.content == "It is 4C in Oslo."
    assert gw.fake.chat_requests[0].json["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
    ]


def test_upstream_400_is_a_400_with_its_message(gw):
    gw.fake.script(error_reply(400, "This model's maximum context length is 8192 tokens.",
                               code="context_length_exceeded", param="messages"))
    with pytest.raises(openai.BadRequestError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}], stream=True)
    err = info.value
    assert err.status_code == 400 and err.code == "context_length_exceeded" and err.param == "messages"
    assert f"(127.0.0.1:{gw.fake.port}) answered HTTP 400: This model's maximum context length" in err.message


def test_upstream_401_is_a_502_blaming_the_gateway_key(gw):
    gw.fake.script(error_reply(401, "Invalid API key"))
    with pytest.raises(openai.InternalServerError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.code == "upstream_auth_failed"
    assert "rejected the gateway's credentials (HTTP 401)" in info.value.message


def test_upstream_429_with_long_retry_after_is_a_429(gw):
    gw.fake.script(error_reply(429, "Too many requests", type="rate_limit_error", retry_after=90))
    with pytest.raises(openai.RateLimitError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "90"


def test_upstream_hang_is_a_504(gw):
    gw.fake.script(hang_reply())
    with pytest.raises(openai.APIStatusError) as info:
        gw.sdk.chat.completions.create(model="agent:impatient", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504 and "read_timeout = 0.3s" in info.value.message
    assert gw.fake.chat_requests[0].json["model"] == "small"  # the second instance's own default


def test_drop_mid_stream_keeps_streamed_text_then_reports_the_error(gw):
    gw.fake.script(stream_reply([chunk({"content": "partial"}), chunk({"content": " text"})], end="drop"))
    with httpx.Client(base_url=gw.base, headers=AUTH_HEADERS, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", json={"model": "agent:main", "stream": True,
                                                  "messages": [{"role": "user", "content": "x"}]}) as resp:
        assert resp.status_code == 200
        datas = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    payloads = [json.loads(d) for d in datas[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices"))
    assert text == "partial text"
    error = payloads[-1]["error"]
    assert error["code"] == "upstream_connection_error" and "dropped mid-stream after 2 chunk(s)" in error["message"]


def test_client_disconnect_closes_the_upstream_request(gw):
    gw.fake.script(stream_reply([chunk({"content": "streaming..."})], end="hang"))
    with httpx.Client(base_url=gw.base, headers=AUTH_HEADERS, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", json={"model": "agent:main", "stream": True,
                                                  "messages": [{"role": "user", "content": "x"}]}) as resp:
        # Keep the iterator referenced: dropping a half-read httpx line iterator closes
        # the connection, and the client must stay connected until the with block ends.
        lines = resp.iter_lines()
        for line in lines:
            if "streaming..." in line:
                break
        [request] = gw.fake.chat_requests
        assert not request.disconnected.is_set()
    # The client left: the gateway cancels the run, which closes the upstream request
    # long before the provider's 30s read_timeout.
    assert request.disconnected.wait(10)


def test_server_ignoring_stream_answers_json(gw):
    gw.fake.script(json_reply(completion("whole", usage_=usage(2, 1))))
    chunks = list(gw.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "whole"


def stream_chunks(gw: Gateway, **body) -> list[dict]:
    """A raw streamed request (no SDK), every data payload decoded; ends with [DONE]."""
    with httpx.Client(base_url=gw.base, headers=AUTH_HEADERS, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", json={"model": "agent:main", "stream": True,
                                                  "messages": [{"role": "user", "content": "x"}], **body}) as resp:
        assert resp.status_code == 200
        datas = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


def test_reasoning_streams_as_reasoning_content(gw):
    gw.fake.script(stream_reply(text_chunks("42", reasoning=["Let me ", "think."], reasoning_field="reasoning",
                                            usage_=usage(5, 9, reasoning=6))))
    payloads = stream_chunks(gw, stream_options={"include_usage": True})
    deltas = [p["choices"][0]["delta"] for p in payloads if p.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Let me think."
    assert "".join(d.get("content") or "" for d in deltas) == "42"
    assert payloads[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6


@pytest.mark.parametrize("reason", ["length", "content_filter"])
def test_length_and_content_filter_finish_reasons(gw, reason):
    gw.fake.script(stream_reply(text_chunks("cut", finish_reason=reason)))
    result = gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert result.choices[0].finish_reason == reason and result.choices[0].message.content == "cut"


def test_upstream_500_and_reset_are_retried_then_answer(gw):
    gw.fake.script(error_reply(500, "oops", type="server_error"), reset_reply(), stream_reply(text_chunks("ok")))
    result = gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert result.choices[0].message.content == "ok" and len(gw.fake.chat_requests) == 3


def test_upstream_5xx_past_the_retries_is_a_502_naming_the_upstream(gw):
    gw.fake.script(*[error_reply(500, "internal failure", type="server_error")] * 3)
    with pytest.raises(openai.InternalServerError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}], stream=True)
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    assert info.value.body["message"] == (f"provider 'up' (127.0.0.1:{gw.fake.port}) answered HTTP 500: "
                                          "internal failure")


def test_upstream_429_retry_after_is_waited_for_then_answers(gw):
    gw.fake.script(error_reply(429, "slow down", type="rate_limit_error", retry_after=0.4),
                   stream_reply(text_chunks("after the wait")))
    result = gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert result.choices[0].message.content == "after the wait"
    first, second = gw.fake.chat_requests
    assert second.received_at - first.received_at >= 0.4


def test_malformed_chunk_mid_stream_keeps_the_text_then_reports_the_error(gw):
    gw.fake.script(stream_reply([chunk({"content": "ok so far"}), "{not json", chunk({"content": "never"})],
                                end="hang"))
    payloads = stream_chunks(gw)
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices"))
    assert text == "ok so far"
    error = payloads[-1]["error"]
    assert error["code"] == "upstream_bad_response"
    assert error["message"].startswith(f"provider 'up' (127.0.0.1:{gw.fake.port}): sent a malformed stream chunk")
    assert gw.fake.chat_requests[0].disconnected.wait(10)


def test_penalties_and_reasoning_effort_reach_the_upstream_only_when_set(gw):
    gw.fake.script(stream_reply(text_chunks("tuned")), stream_reply(text_chunks("plain")))
    tuned = gw.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "x"}],
        presence_penalty=0.5, frequency_penalty=-1.25, reasoning_effort="low")
    plain = gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    assert (tuned.choices[0].message.content, plain.choices[0].message.content) == ("tuned", "plain")
    sent, unset = (r.json for r in gw.fake.chat_requests)
    assert (sent["presence_penalty"], sent["frequency_penalty"], sent["reasoning_effort"]) == (0.5, -1.25, "low")
    assert not {"presence_penalty", "frequency_penalty", "reasoning_effort"} & set(unset)


@pytest.mark.parametrize(("field", "value"), [("presence_penalty", 2.5), ("frequency_penalty", -3),
                                              ("reasoning_effort", "extreme")])
def test_out_of_range_sampling_field_is_a_400_naming_it(gw, field, value):
    with pytest.raises(openai.BadRequestError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}],
                                       extra_body={field: value})
    assert info.value.status_code == 400 and info.value.param == field and info.value.code == "invalid_value"
    assert repr(value) in info.value.body["message"]
    assert gw.fake.chat_requests == []  # refused before any upstream call


def test_endless_upstream_line_is_a_502_naming_the_limit(gw):
    gw.fake.script(endless_line_reply([chunk({"content": "so far"})]))
    with pytest.raises(openai.APIStatusError) as info:
        gw.sdk.chat.completions.create(model="agent:tight", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.code == "upstream_bad_response"
    assert "longer than max_event_bytes = 65536 bytes" in info.value.message
    assert gw.fake.chat_requests[0].disconnected.wait(10)


def test_endless_upstream_line_mid_stream_is_an_error_chunk(gw):
    gw.fake.script(endless_line_reply([chunk({"content": "so far"})]))
    with httpx.Client(base_url=gw.base, headers=AUTH_HEADERS, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", json={"model": "agent:tight", "stream": True,
                                                  "messages": [{"role": "user", "content": "x"}]}) as resp:
        assert resp.status_code == 200
        datas = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    payloads = [json.loads(d) for d in datas[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices")) == "so far"
    error = payloads[-1]["error"]
    assert error["code"] == "upstream_bad_response"
    assert "sent a line of its event stream longer than max_event_bytes = 65536 bytes" in error["message"]


@pytest.mark.parametrize(("header", "expected"), HOSTILE_RETRY_AFTER, ids=[h for h, _ in HOSTILE_RETRY_AFTER])
def test_upstream_429_with_a_hostile_retry_after_is_a_429_with_a_finite_one(gw, header, expected):
    gw.fake.script(*[error_reply(429, "Too many requests", type="rate_limit_error",
                                 retry_after=finite_retry_after(header))] * 3)
    with pytest.raises(openai.RateLimitError) as info:
        gw.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "x"}])
    shown = info.value.response.headers["retry-after"]
    assert info.value.status_code == 429 and info.value.code == "upstream_rate_limited"
    assert shown == expected if expected else 3500 < int(shown) <= 3600
