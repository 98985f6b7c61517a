"""The official openai SDK against a real Hypercorn server, shapes checked with the SDK's models."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def test_create_plain(server, strict):
    checked = server.validated
    completion = server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "hello big world"}])
    assert server.validated == checked + 1  # the SDK's answer went through the strict check
    assert completion.choices[0].message.content == "hello big world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "agent:main" and completion.id.startswith("chatcmpl-")
    assert completion.usage.completion_tokens == 3

    raw = server.post({"model": "agent:main", "messages": [{"role": "user", "content": "hello big world"}]})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    body = strict(ChatCompletion, raw.json())
    assert body.object == "chat.completion"
    assert raw.json()["choices"][0]["message"] == {"role": "assistant", "content": "hello big world",
                                                   "refusal": None, "annotations": []}


def test_create_streamed(server, strict):
    checked = server.validated
    chunks = list(server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert server.validated == checked + len(chunks)  # every chunk went through the strict check
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert len({c.id for c in chunks}) == 1

    lines = server.stream_lines({"messages": [{"role": "user", "content": "one two three"}]})
    assert lines[-1] == "[DONE]"
    parsed = [strict(ChatCompletionChunk, line) for line in lines[:-1]]
    # role chunk, one chunk per word, the final empty-delta chunk; no usage chunk unless asked for.
    assert len(parsed) == 5 and all(p.usage is None and "usage" not in json.loads(line)
                                    for p, line in zip(parsed, lines, strict=False))
    assert json.loads(lines[-2])["choices"][0]["delta"] == {}


def test_usage_on_streams(server, strict):
    chunks = list(server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "a b c d"}], stream=True,
        stream_options={"include_usage": True}))
    *rest, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.completion_tokens, last.usage.prompt_tokens) == (4, 5)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in rest)
    lines = server.stream_lines({"messages": [{"role": "user", "content": "a b"}],
                                 "stream_options": {"include_usage": True}})
    parsed = [strict(ChatCompletionChunk, line) for line in lines[:-1]]
    # OpenAI sends "usage": null on every chunk once include_usage is on.
    assert all(json.loads(line)["usage"] is None for line in lines[:-2])
    assert parsed[-1].usage.completion_tokens == 2


def test_max_tokens_gives_finish_reason_length(server):
    for field in ("max_tokens", "max_completion_tokens"):
        completion = server.sdk.chat.completions.create(
            model="agent:main", messages=[{"role": "user", "content": "one two three four five"}], **{field: 2})
        assert completion.choices[0].finish_reason == "length"
        assert completion.choices[0].message.content == "one two "
    chunks = list(server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "one two three four five"}], max_tokens=3,
        stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three "


def test_tool_round_trip(server, strict):
    messages = [{"role": "user", "content": "Oslo"}]
    first = server.sdk.chat.completions.create(model="agent:main", messages=messages, tools=[WEATHER],
                                               tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny and 20 degrees"}]
    second = server.post({"model": "agent:main", "messages": messages, "tools": [WEATHER]})
    body = strict(ChatCompletion, second.json())
    assert body.choices[0].message.content == "sunny and 20 degrees"
    assert body.choices[0].finish_reason == "stop" and body.choices[0].message.tool_calls is None


def test_named_tool_choice_and_streamed_tool_call_deltas(server, strict):
    lines = server.stream_lines({"messages": [{"role": "user", "content": "Rome"}], "tools": [WEATHER, TIME],
                                 "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    chunks = [strict(ChatCompletionChunk, line) for line in lines[:-1]]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls[0].id and first.tool_calls[0].function.name == "get_weather"
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-1]]
    assert len(pieces) >= 1 and all(p.id is None and p.function.name is None and p.index == 0 for p in pieces)
    arguments = first.tool_calls[0].function.arguments + "".join(p.function.arguments for p in pieces)
    assert json.loads(arguments) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls(server):
    both = server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER, TIME],
        tool_choice="required")
    calls = both.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2

    # Streamed, the SDK's own accumulator rebuilds both calls from the indexed deltas.
    with server.sdk.chat.completions.stream(model="agent:main", messages=[{"role": "user", "content": "Paris"}],
                                            tools=[WEATHER, TIME], tool_choice="required") as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}

    one = server.sdk.chat.completions.create(
        model="agent:main", messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER, TIME],
        tool_choice="required", parallel_tool_calls=False)
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]


def test_models_list_and_retrieve(server, strict):
    page = server.sdk.models.list()
    ids = [m.id for m in page.data]
    assert ids == sorted(f"agent:{name}" for name in server.kernel.agents.agents)
    raw = server.http.get("/v1/models").json()
    assert raw["object"] == "list"
    for item in raw["data"]:
        strict(Model, item)
    assert server.sdk.models.retrieve("agent:main").id == "agent:main"
    bare = server.http.get("/v1/models/main")
    assert bare.status_code == 200 and strict(Model, bare.json()).id == "agent:main"
    with pytest.raises(openai.NotFoundError) as info:
        server.sdk.models.retrieve("agent:nope")
    assert info.value.body["code"] == "model_not_found" and "agent:main" in info.value.body["message"]


def test_agent_routing_by_header_and_plain_model_names(server):
    routed = server.sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-agent-id": "transcript"})
    # The transcript agent shows its instructions, so the header picked it over the model name.
    assert routed.choices[0].message.content.startswith("system: Be brief.")
    assert routed.model == "gpt-4o"
    default = server.sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert default.choices[0].message.content == "hi"
