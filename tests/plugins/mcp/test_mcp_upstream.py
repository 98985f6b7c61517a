"""The agent loop on the fake OpenAI upstream: the model (scripted) calls a configured MCP
server's tool, the kernel runs it on a real stdio MCP server, and the next upstream turn
sees the result. Checks what the upstream received, the items and events the client gets
(parsed strictly with the openai SDK's types), usage over all turns, and the limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from testsupport.fake_openai import FakeOpenAI, error_reply, stream_reply, text_chunks, tool_call_chunks, usage
from testsupport.mcp_http import chat, post, sdk_event, sdk_items, sdk_response, stream_events

from kernel.testing import AUTH_HEADERS, build_app, merge, serve_in_thread

from .conftest import gateway_config

ADD = ("call_add_1", "calc__add", '{"a": 2, "b": 40}')


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def loop_gateway(tmp_path_factory: pytest.TempPathFactory, mcp_http_url: str, upstream: FakeOpenAI) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("loopgw")
    config = merge(gateway_config(tmp, mcp_http_url), {
        "plugins": {"openai_upstream": {"enabled": True}},
        "providers": {"up": {"kind": "openai_upstream", "base_url": upstream.base_url, "api_key": "sk-fake",
                             "model": "fake-model", "max_retries": 0}},
        "agents": {"upcalc": {"provider": "up", "tools": ["calc"]},
                   "upshort": {"provider": "up", "tools": ["calc"], "max_tool_iterations": 2}},
    })
    with serve_in_thread(build_app(config, tmp / "plugins.toml")) as base:
        yield base


@pytest.fixture
def fake(upstream: FakeOpenAI) -> Iterator[FakeOpenAI]:
    upstream.reset()
    yield upstream
    upstream.reset()


def script_add_then_text(fake: FakeOpenAI) -> None:
    """Turn 1: the model calls calc__add(2, 40); turn 2: it answers with text."""
    fake.script(stream_reply(tool_call_chunks([ADD], usage_=usage(11, 5, cached=2, cache_write=3))),
                stream_reply(text_chunks("The sum is ", "42.", usage_=usage(30, 4, cache_write=1))))


def assert_second_turn_saw_the_result(fake: FakeOpenAI, question: str) -> None:
    first, second = fake.wait_for_requests(2)
    assert len(fake.chat_requests) == 2
    offered = {t["function"]["name"]: t["function"] for t in first.json["tools"]}
    assert set(offered["calc__add"]["parameters"]["properties"]) == {"a", "b"}  # the MCP tool's schema
    messages = second.json["messages"]
    assert messages[-3]["role"] == "user" and question in json.dumps(messages[-3]["content"])
    call_message, tool_message = messages[-2], messages[-1]
    assert call_message["role"] == "assistant"
    [call] = call_message["tool_calls"]
    assert call["id"] == "call_add_1" and call["function"]["name"] == "calc__add"
    assert json.loads(call["function"]["arguments"]) == {"a": 2, "b": 40}
    assert tool_message == {"role": "tool", "tool_call_id": "call_add_1", "content": "42"}
    assert "calc__add" in {t["function"]["name"] for t in second.json["tools"]}  # still offered


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_loop_on_the_upstream(loop_gateway: str, fake: FakeOpenAI, stream: bool) -> None:
    script_add_then_text(fake)
    request = {"model": "upcalc", "input": "What is 2 + 40?"}
    if stream:
        events = stream_events(loop_gateway, request)
        parsed = [sdk_event(event) for event in events]  # every event, strictly
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        kinds = [e["type"] for e in events]
        mcp = [k for k in kinds if "mcp" in k]
        assert mcp == ["response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
                       "response.mcp_call_arguments.done", "response.mcp_call.completed"]
        assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
        assert type(parsed[-1]).__name__ == "ResponseCompletedEvent"
        body = events[-1]["response"]
    else:
        body = post(loop_gateway, request)
    response = sdk_response(body)
    assert_second_turn_saw_the_result(fake, "What is 2 + 40?")
    assert [item.type for item in response.output] == ["mcp_call", "message"]
    call = response.output[0]
    assert call.type == "mcp_call" and call.server_label == "calc" and call.name == "add"
    assert json.loads(call.arguments) == {"a": 2, "b": 40} and call.output == "42" and call.error is None
    assert response.output_text == "The sum is 42." and response.status == "completed"
    # Usage sums both upstream turns.
    assert body["usage"] == {"input_tokens": 41, "output_tokens": 9, "total_tokens": 50,
                             "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 4},
                             "output_tokens_details": {"reasoning_tokens": 0}}


def test_chat_completions_loop_on_the_upstream(loop_gateway: str, fake: FakeOpenAI) -> None:
    script_add_then_text(fake)
    body = chat(loop_gateway, {"model": "upcalc", "messages": [{"role": "user", "content": "What is 2 + 40?"}]})
    completion = ChatCompletion.model_validate(body)
    assert_second_turn_saw_the_result(fake, "What is 2 + 40?")
    message = completion.choices[0].message
    assert message.content == "The sum is 42." and not message.tool_calls
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (41, 9)
    assert completion.usage.total_tokens == 50


def test_chat_completions_streamed_loop_on_the_upstream(loop_gateway: str, fake: FakeOpenAI) -> None:
    script_add_then_text(fake)
    events = stream_events(loop_gateway, {"model": "upcalc", "stream_options": {"include_usage": True},
                                          "messages": [{"role": "user", "content": "What is 2 + 40?"}]},
                           path="/v1/chat/completions")
    chunks = [ChatCompletionChunk.model_validate(event) for event in events]
    assert_second_turn_saw_the_result(fake, "What is 2 + 40?")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The sum is 42."
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    [final_usage] = [c.usage for c in chunks if c.usage is not None]
    assert (final_usage.prompt_tokens, final_usage.completion_tokens) == (41, 9)


def test_a_tool_that_raises_and_one_that_times_out_give_the_model_error_results(
        loop_gateway: str, fake: FakeOpenAI) -> None:
    fake.script(stream_reply(tool_call_chunks([("call_f", "calc__fail", '{"message": "disk on fire"}'),
                                               ("call_h", "calc__hang", "{}")], usage_=usage(5, 3))),
                stream_reply(text_chunks("Both tools failed.", usage_=usage(9, 3))))
    body = post(loop_gateway, {"model": "upcalc", "input": "try the tools"})
    response = sdk_response(body)
    second = fake.wait_for_requests(2)[1]
    results = {m["tool_call_id"]: m["content"] for m in second.json["messages"] if m["role"] == "tool"}
    assert results["call_f"].startswith("Error: ") and "disk on fire" in results["call_f"]
    assert results["call_h"] == "Error: tool 'hang' timed out after 3 seconds"
    calls = {c.name: c for c in response.output if c.type == "mcp_call"}
    assert calls["fail"].status == "failed" and calls["fail"].output is None
    assert calls["fail"].error is not None and "disk on fire" in calls["fail"].error.model_dump_json()
    assert calls["hang"].status == "failed" and calls["hang"].error is not None
    assert "timed out after 3 seconds" in calls["hang"].error.model_dump_json()
    assert response.status == "completed" and response.output_text == "Both tools failed."
    assert body["usage"]["input_tokens"] == 14 and body["usage"]["output_tokens"] == 6


def test_calls_past_max_tool_calls_get_an_error_result_and_the_model_a_last_turn(
        loop_gateway: str, fake: FakeOpenAI) -> None:
    fake.script(stream_reply(tool_call_chunks([("call_1", "calc__add", '{"a": 1, "b": 1}'),
                                               ("call_2", "calc__add", '{"a": 2, "b": 2}')], usage_=usage(5, 3))),
                stream_reply(text_chunks("Only one ran.", usage_=usage(9, 3))))
    body = post(loop_gateway, {"model": "upcalc", "input": "add twice", "max_tool_calls": 1})
    response = sdk_response(body)
    first, second = fake.wait_for_requests(2)
    assert "calc__add" in {t["function"]["name"] for t in first.json["tools"]}
    # The limit is spent: the last turn offers no server tools, and the call past it was not run.
    assert "calc__add" not in {t["function"]["name"] for t in second.json.get("tools") or []}
    results = {m["tool_call_id"]: m["content"] for m in second.json["messages"] if m["role"] == "tool"}
    assert results["call_1"] == "2"
    assert results["call_2"] == ("Error: not run: the limit of 1 server-side tool calls for this response "
                                 "was reached")
    [call] = [c for c in response.output if c.type == "mcp_call"]
    assert call.output == "2"
    assert response.output_text == "Only one ran." and response.status == "completed"


def test_max_tool_iterations_ends_the_loop_with_a_turn_without_server_tools(
        loop_gateway: str, fake: FakeOpenAI) -> None:
    step = lambda n: stream_reply(tool_call_chunks([(f"call_{n}", "calc__add", f'{{"a": {n}, "b": 0}}')]))  # noqa: E731
    # The third turn offers no server tools; a model that calls one anyway is not obeyed
    # (the call is dropped, never run and never handed to the client as its own).
    fake.script(step(1), step(2), stream_reply(tool_call_chunks([("call_3", "calc__add", '{"a": 3, "b": 0}')],
                                                                text="Done: 1 and 2.")))
    body = post(loop_gateway, {"model": "upshort", "input": "keep adding"})
    response = sdk_response(body)
    requests = fake.wait_for_requests(3)
    assert len(fake.chat_requests) == 3
    assert ["calc__add" in {t["function"]["name"] for t in r.json.get("tools") or []} for r in requests] == \
        [True, True, False]
    assert [c.output for c in response.output if c.type == "mcp_call"] == ["1", "2"]
    assert not [i for i in response.output if i.type == "function_call"]
    assert response.output_text == "Done: 1 and 2." and response.status == "completed"


def test_the_upstream_failing_mid_loop_fails_the_response_with_usage_so_far(
        loop_gateway: str, fake: FakeOpenAI) -> None:
    fake.script(stream_reply(tool_call_chunks([ADD], usage_=usage(11, 5))), error_reply(400, "context too long"))
    response = httpx.post(f"{loop_gateway}/v1/responses", headers=AUTH_HEADERS, timeout=60,
                          json={"model": "upcalc", "input": "What is 2 + 40?"})
    body = response.json()
    assert body["status"] == "failed" and "context too long" in body["error"]["message"]
    assert [i["type"] for i in body["output"]] == ["mcp_call"] and body["output"][0]["output"] == "42"
    assert body["usage"]["input_tokens"] == 11
    # (The whole failed Response is not parsed strictly: the SDK's error.code is a closed list of
    # OpenAI's own codes, and a gateway's upstream codes are not in it; the items are.)
    sdk_items(body)

