"""End to end over real HTTP: POST /v1/responses (live Hypercorn) -> openai_upstream ->
the fake upstream. Bodies and events are checked against the OpenResponses spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from testsupport.fake_openai import (
    FakeOpenAI,
    chunk,
    endless_line_reply,
    error_reply,
    hang_reply,
    reset_reply,
    stream_reply,
    text_chunks,
    tool_call_chunks,
    usage,
)
from testsupport.spec import assert_valid, assert_valid_event

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, build_app, default_config, merge, serve_in_thread

from .conftest import HOSTILE_RETRY_AFTER, finite_retry_after, upstream_config

PNG = ("data:image/png;base64,"
       "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


class Gateway:
    def __init__(self, base: str, fake: FakeOpenAI) -> None:
        self.base = base
        self.fake = fake
        self.http = httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30)
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=30)

    def post(self, body: dict[str, Any]) -> httpx.Response:
        """A non-streaming POST /v1/responses; its body is always a valid ResponseResource."""
        resp = self.http.post("/v1/responses", json={"model": "agent:main", **body})
        assert_valid("ResponseResource", resp.json())
        return resp

    def stream(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """A streaming POST; every event is checked against the spec."""
        with self.http.stream("POST", "/v1/responses",
                              json={"model": "agent:main", "stream": True, **body}) as resp:
            assert resp.status_code == 200
            datas = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        events = [json.loads(d) for d in datas[:-1]]
        for event in events:
            assert_valid_event(event)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        return events


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("upstream-responses")
    with FakeOpenAI() as fake:
        config = merge(default_config(tmp / "state"), upstream_config(fake.base_url, read_timeout=30))
        config = merge(config, {
            "plugins": {"openresponses": {"enabled": True}},
            # A second instance of the kind: impatient, for timeouts.
            "providers": {"impatient": {"kind": "openai_upstream", "base_url": fake.base_url, "model": "small",
                                        "read_timeout": 0.3, "max_retries": 0}},
            "agents": {"impatient": {"provider": "impatient"}, "tight": {"provider": "tight"}},
        })
        # A third with a small event-stream cap, for the endless-line tests.
        config["providers"]["tight"] = {"kind": "openai_upstream", "base_url": fake.base_url, "model": "small",
                                        "max_event_bytes": 65536, "max_retries": 0}
        app = build_app(config, tmp / "plugins.toml")
        with serve_in_thread(app) as base:
            gw = Gateway(base, fake)
            yield gw
            gw.http.close()


@pytest.fixture
def gw(gateway: Gateway) -> Iterator[Gateway]:
    gateway.fake.reset()
    yield gateway
    gateway.fake.reset()


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_text_with_reasoning_and_usage(gw):
    gw.fake.script(stream_reply(text_chunks("Paris", " is the capital.", reasoning=["Geography", " question."],
                                            usage_=usage(21, 7, reasoning=4, cached=3))))
    resp = gw.post({"input": "Capital of France?", "instructions": "Answer in one sentence.",
                    "temperature": 0.1, "max_output_tokens": 100})
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "completed"
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and message["type"] == "message"
    assert message["content"][0]["text"] == "Paris is the capital."
    assert body["usage"]["input_tokens"] == 21 and body["usage"]["output_tokens"] == 7
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 4
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 3
    sent = gw.fake.chat_requests[0].json
    assert sent["messages"] == [{"role": "system", "content": "Answer in one sentence."},
                                {"role": "user", "content": "Capital of France?"}]
    assert (sent["temperature"], sent["max_tokens"], sent["model"]) == (0.1, 100, "fake-model")


def test_streamed_text_events(gw):
    gw.fake.script(stream_reply(text_chunks("one", " two", " three", usage_=usage(3, 3))))
    events = gw.stream({"input": "count"})
    assert "".join(e["delta"] for e in of(events, "response.output_text.delta")) == "one two three"
    assert [e["delta"] for e in of(events, "response.output_text.delta")] == ["one", " two", " three"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["total_tokens"] == 6


def test_parallel_function_calls_streamed(gw):
    calls = [("call_a", "get_weather", '{"city": "Oslo"}'), ("call_b", "get_time", "{}")]
    gw.fake.script(stream_reply(tool_call_chunks(calls, pieces=3)))
    events = gw.stream({"input": "both please", "tools": [WEATHER, TIME], "tool_choice": "required"})
    done = of(events, "response.function_call_arguments.done")
    assert [(e["name"], json.loads(e["arguments"])) for e in done] == [("get_weather", {"city": "Oslo"}),
                                                                       ("get_time", {})]
    assert len(of(events, "response.function_call_arguments.delta")) >= 3
    output = events[-1]["response"]["output"]
    assert [(i["type"], i["call_id"]) for i in output] == [("function_call", "call_a"), ("function_call", "call_b")]
    sent = gw.fake.chat_requests[0].json
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is True
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": WEATHER["parameters"]}},
        {"type": "function", "function": {"name": "get_time", "parameters": TIME["parameters"]}},
    ]


def test_function_call_output_round_trip_and_allowed_tools(gw):
    gw.fake.script(stream_reply(text_chunks("It is 4C.")))
    resp = gw.post({"tools": [WEATHER, TIME],
                    "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [
                        {"type": "function", "name": "get_weather"}]},
                    "input": [
                        {"role": "user", "content": "Weather in Oslo?"},
                        {"type": "function_call", "call_id": "call_9", "name": "get_weather",
                         "arguments": '{"city":"Oslo"}'},
                        {"type": "function_call_output", "call_id": "call_9", "output": "4C"},
                    ]})
    assert resp.status_code == 200 and resp.json()["output"][0]["content"][0]["text"] == "It is 4C."
    sent = gw.fake.chat_requests[0].json
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "4C"},
    ]
    # allowed_tools narrowed the list before it was sent.
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"] and sent["tool_choice"] == "auto"


def test_image_input_and_json_schema_format(gw):
    schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"],
              "additionalProperties": False}
    gw.fake.script(stream_reply(text_chunks('{"color": "green"}')))
    resp = gw.post({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What color?"},
        {"type": "input_image", "image_url": PNG, "detail": "low"}]}],
        "text": {"format": {"type": "json_schema", "name": "color", "schema": schema, "strict": True}}})
    assert resp.status_code == 200
    sent = gw.fake.chat_requests[0].json
    [message] = sent["messages"]
    assert message["content"][0] == {"type": "text", "text": "What color?"}
    assert message["content"][1]["type"] == "image_url"
    assert message["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert message["content"][1]["image_url"]["detail"] == "low"
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "color", "schema": schema, "strict": True}}


def test_length_finish_is_an_incomplete_response(gw):
    gw.fake.script(stream_reply(text_chunks("trunc", finish_reason="length")))
    body = gw.post({"input": "long story", "max_output_tokens": 16}).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(("reply", "status", "code", "text"), [
    (error_reply(400, "Unsupported parameter: 'top_p'", code="unsupported_parameter", param="top_p"), 400,
     "unsupported_parameter", "answered HTTP 400: Unsupported parameter: 'top_p'"),
    (error_reply(401, "Invalid API key"), 502, "upstream_auth_failed", "rejected the gateway's credentials"),
    (error_reply(429, "Quota exceeded", type="rate_limit_error", retry_after=600), 429, "upstream_rate_limited",
     "answered HTTP 429: Quota exceeded"),
], ids=["400", "401", "429"])
def test_upstream_errors_become_failed_responses_with_the_right_status(gw, reply, status, code, text):
    gw.fake.script(reply)
    resp = gw.post({"input": "x"})
    assert resp.status_code == status
    body = resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == code and text in body["error"]["message"]
    assert f"provider 'up' (127.0.0.1:{gw.fake.port})" in body["error"]["message"]
    if status == 429:
        assert resp.headers["retry-after"] == "600"


def test_drop_mid_stream_keeps_partial_output_in_the_failed_response(gw):
    gw.fake.script(stream_reply([chunk({"content": "Once upon"}), chunk({"content": " a time"})], end="drop"))
    events = gw.stream({"input": "story"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "dropped mid-stream after 2 chunk(s)" in events[-2]["error"]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_connection_error"
    assert failed["output"][0]["content"][0]["text"] == "Once upon a time"


def test_client_disconnect_closes_the_upstream_request(gw):
    gw.fake.script(stream_reply([chunk({"content": "thinking..."})], end="hang"))
    with gw.http.stream("POST", "/v1/responses",
                        json={"model": "agent:main", "input": "x", "stream": True}) as resp:
        # Keep the iterator referenced: dropping a half-read httpx line iterator closes
        # the connection, and the client must stay connected until the with block ends.
        lines = resp.iter_lines()
        for line in lines:
            if "thinking..." in line:
                break
        [request] = gw.fake.chat_requests
        assert not request.disconnected.is_set()
    assert request.disconnected.wait(10)  # read_timeout is 30s: only the cancel explains it


def test_openai_sdk_streams_through_the_gateway(gw):
    gw.fake.script(stream_reply(text_chunks("Hello", " SDK", usage_=usage(4, 2))))
    with gw.sdk.responses.stream(model="gpt-4.1-mini", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hello", " SDK"] and final.output_text == "Hello SDK"
    # A plain model name is the upstream model.
    assert gw.fake.chat_requests[0].json["model"] == "gpt-4.1-mini"


def test_content_filter_finish_is_an_incomplete_response(gw):
    gw.fake.script(stream_reply(text_chunks("I can", finish_reason="content_filter")))
    body = gw.post({"input": "something"}).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "content_filter"}
    assert body["output"][0]["content"][0]["text"] == "I can"


def test_upstream_500_is_retried_then_answers(gw):
    gw.fake.script(error_reply(500, "oops", type="server_error"), reset_reply(),
                   stream_reply(text_chunks("recovered")))
    resp = gw.post({"input": "x"})
    assert resp.status_code == 200 and resp.json()["output"][0]["content"][0]["text"] == "recovered"
    assert len(gw.fake.chat_requests) == 3  # max_retries = 2


def test_upstream_5xx_past_the_retries_is_a_502_naming_the_upstream(gw):
    gw.fake.script(*[error_reply(503, "model is overloaded", type="server_error")] * 3)
    resp = gw.post({"input": "x"})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["message"] == f"provider 'up' (127.0.0.1:{gw.fake.port}) answered HTTP 503: model is overloaded"


def test_upstream_429_retry_after_is_waited_for_then_answers(gw):
    gw.fake.script(error_reply(429, "Rate limit reached", type="rate_limit_error", retry_after=0.4),
                   stream_reply(text_chunks("after the wait")))
    events = gw.stream({"input": "x"})
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in of(events, "response.output_text.delta")) == "after the wait"
    first, second = gw.fake.chat_requests
    assert second.received_at - first.received_at >= 0.4


def test_upstream_hang_is_a_504(gw):
    gw.fake.script(hang_reply())
    resp = gw.post({"model": "agent:impatient", "input": "x"})
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert error["message"] == (f"provider 'impatient' (127.0.0.1:{gw.fake.port}): "
                                "sent no response within read_timeout = 0.3s")
    assert gw.fake.chat_requests[0].disconnected.wait(10)  # the hung request was closed


def test_stall_mid_stream_fails_keeping_the_streamed_text(gw):
    gw.fake.script(stream_reply([chunk({"content": "Hel"}), chunk({"content": "lo"})], end="hang"))
    events = gw.stream({"model": "agent:impatient", "input": "x"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["error"]["code"] == "upstream_timeout" and "stream stalled" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "Hello"


def test_malformed_chunk_mid_stream_fails_keeping_the_streamed_text(gw):
    gw.fake.script(stream_reply([chunk({"content": "ok so far"}), '{"choices": [{"delta": {"content": "x"'],
                                end="hang"))
    events = gw.stream({"input": "x"})
    assert "".join(e["delta"] for e in of(events, "response.output_text.delta")) == "ok so far"
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["error"]["code"] == "upstream_bad_response"
    assert failed["error"]["message"].startswith(
        f"provider 'up' (127.0.0.1:{gw.fake.port}): sent a malformed stream chunk after 1 good chunk(s) (not JSON:")
    assert failed["output"][0]["content"][0]["text"] == "ok so far"
    assert gw.fake.chat_requests[0].disconnected.wait(10)


def test_malformed_chunk_without_streaming_is_a_502_with_the_partial_output(gw):
    gw.fake.script(stream_reply([chunk({"content": "partial"}), "not json at all"]))
    resp = gw.post({"input": "x"})
    assert resp.status_code == 502
    body = resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == "upstream_bad_response"
    assert body["output"][0]["content"][0]["text"] == "partial"


def test_penalties_and_reasoning_effort_reach_the_upstream_only_when_set(gw):
    gw.fake.script(stream_reply(text_chunks("tuned")), stream_reply(text_chunks("plain")))
    tuned = gw.post({"input": "x", "presence_penalty": -0.75, "frequency_penalty": 2,
                     "reasoning": {"effort": "xhigh", "summary": "auto"}})
    plain = gw.post({"input": "x"})
    assert (tuned.status_code, plain.status_code) == (200, 200)
    echo = tuned.json()
    assert (echo["presence_penalty"], echo["frequency_penalty"], echo["reasoning"]["effort"]) == (-0.75, 2, "xhigh")
    sent, unset = (r.json for r in gw.fake.chat_requests)
    assert (sent["presence_penalty"], sent["frequency_penalty"], sent["reasoning_effort"]) == (-0.75, 2.0, "xhigh")
    assert not {"presence_penalty", "frequency_penalty", "reasoning_effort"} & set(unset)


@pytest.mark.parametrize(("body", "param"), [
    ({"presence_penalty": -2.01}, "presence_penalty"),
    ({"frequency_penalty": 7}, "frequency_penalty"),
    # "minimal" is OpenAI's, but not in the spec's ReasoningEffortEnum (and could not be echoed).
    ({"reasoning": {"effort": "minimal"}}, "reasoning.effort"),
])
def test_out_of_range_sampling_field_is_a_400_naming_it(gw, body, param):
    resp = gw.http.post("/v1/responses", json={"model": "agent:main", "input": "x", **body})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, "invalid_value", "invalid_request_error")
    assert gw.fake.chat_requests == []  # refused before any upstream call


def test_endless_upstream_line_is_a_failed_response_naming_the_limit(gw):
    gw.fake.script(endless_line_reply([chunk({"content": "so far"})]))
    resp = gw.post({"model": "agent:tight", "input": "x"})
    assert resp.status_code == 502
    body = resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == "upstream_bad_response"
    assert "longer than max_event_bytes = 65536 bytes" in body["error"]["message"]
    assert body["output"][0]["content"][0]["text"] == "so far"
    assert gw.fake.chat_requests[0].disconnected.wait(10)


def test_endless_upstream_line_mid_stream_is_response_failed(gw):
    gw.fake.script(endless_line_reply([chunk({"content": "so far"})]))
    events = gw.stream({"model": "agent:tight", "input": "x"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["error"]["code"] == "upstream_bad_response"
    assert "sent a line of its event stream longer than max_event_bytes = 65536 bytes" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "so far"


@pytest.mark.parametrize(("header", "expected"), HOSTILE_RETRY_AFTER, ids=[h for h, _ in HOSTILE_RETRY_AFTER])
def test_upstream_429_with_a_hostile_retry_after_is_a_429_with_a_finite_one(gw, header, expected):
    gw.fake.script(*[error_reply(429, "Quota exceeded", type="rate_limit_error",
                                 retry_after=finite_retry_after(header))] * 3)
    resp = gw.post({"input": "x"})
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "upstream_rate_limited"
    shown = resp.headers["retry-after"]
    assert shown == expected if expected else 3500 < int(shown) <= 3600
