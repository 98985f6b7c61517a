"""Run events -> chunk sequences, checked with the openai SDK's own typed models."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from kernel import (
    Failed,
    Finished,
    Message,
    ReasoningDelta,
    RunError,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Usage,
)
from kernel.runs import RunResult
from plugins.chat_completions.encode import ChunkEncoder, completion_body


def payloads(data: bytes) -> list[str]:
    events = data.decode().split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1]), events
    return [e[len("data: "):] for e in events[:-1]]


def encode_all(events, **kw) -> list[str]:
    enc = ChunkEncoder(cid="chatcmpl-1", created=1700000000, model="agent:main",
                       include_usage=kw.pop("include_usage", False), **kw)
    return payloads(b"".join(enc.encode(ev) for ev in events))


def test_text_stream_sequence(strict):
    out = encode_all([TextDelta("Hel"), TextDelta("lo"), Usage(3, 2), Finished("stop")], include_usage=True)
    assert out[-1] == "[DONE]"
    chunks = [strict(ChatCompletionChunk, p) for p in out[:-1]]
    first, *content, final, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in content] == ["Hel", "lo"]
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in [first, *content])
    assert final.choices[0].finish_reason == "stop" and json.loads(out[-3])["choices"][0]["delta"] == {}
    assert usage.choices == [] and (usage.usage.prompt_tokens, usage.usage.completion_tokens,
                                    usage.usage.total_tokens) == (3, 2, 5)
    assert {c.id for c in chunks} == {"chatcmpl-1"}


def test_tool_call_pieces_and_done_only_calls(strict):
    out = encode_all([
        ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, '{"x":'), ToolCallDone(0, "call_a", "f", '{"x":1}'),
        ToolCallDone(1, "call_b", "g", "{}"),  # a provider that only reports finished calls
        Finished("stop"),
    ])
    chunks = [strict(ChatCompletionChunk, p) for p in out[:-1]]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    assert (first.tool_calls[0].index, first.tool_calls[0].id, first.tool_calls[0].type,
            first.tool_calls[0].function.name) == (0, "call_a", "function", "f")
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-1]]
    assert [(p.index, p.id, p.function.arguments) for p in pieces] == [
        (0, None, '{"x":'), (0, None, "1}"), (1, "call_b", "{}")]
    assert pieces[-1].function.name == "g"
    # "stop" after tool calls is reported the way Chat clients expect.
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_errors_and_cancellation_end_the_stream_with_an_error_event():
    out = encode_all([TextDelta("a"), Failed(RunError("boom", code="provider_error", status=500))])
    assert json.loads(out[-2]) == {"error": {"message": "boom", "type": "server_error", "param": None,
                                             "code": "provider_error"}}
    assert out[-1] == "[DONE]"
    cancelled = encode_all([TextDelta("a"), Finished("cancelled")])
    assert "cancelled" not in json.dumps([json.loads(p) for p in cancelled[:-1] if "choices" in p])
    assert json.loads(cancelled[-2])["error"]["code"] == "run_cancelled"


def test_reasoning_is_hidden_unless_exposed(strict):
    hidden = encode_all([ReasoningDelta("think"), TextDelta("a"), Finished("stop")])
    assert "think" not in "".join(hidden)
    shown = encode_all([ReasoningDelta("think"), TextDelta("a"), Finished("stop")], expose_reasoning=True)
    assert json.loads(shown[1])["choices"][0]["delta"] == {"reasoning_content": "think"}


def test_completion_body(strict):
    result = RunResult("completed", [Message("assistant", [TextPart("hi")]),
                                     ToolCall(call_id="c1", name="f", arguments="{}")],
                       Usage(4, 1, reasoning_tokens=1, cached_tokens=2), "tool_calls", None)
    body = strict(ChatCompletion, completion_body(cid="chatcmpl-1", created=1, model="m", result=result))
    message = body.choices[0].message
    assert (message.content, message.tool_calls[0].id, message.tool_calls[0].function.name) == ("hi", "c1", "f")
    assert body.choices[0].finish_reason == "tool_calls"
    assert body.usage.prompt_tokens_details.cached_tokens == 2
    assert body.usage.completion_tokens_details.reasoning_tokens == 1
    empty = RunResult("incomplete", [], None, "length", None)
    body = strict(ChatCompletion, completion_body(cid="chatcmpl-2", created=1, model="m", result=empty))
    choice = body.choices[0]
    assert (choice.message.content, choice.finish_reason, body.usage.total_tokens) == ("", "length", 0)


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("stop", False, "stop"), ("length", False, "length"), ("content_filter", False, "content_filter"),
    ("tool_calls", True, "tool_calls"), ("stop", True, "tool_calls"), ("length", True, "length"),
])
def test_finish_reasons(strict, reason, calls, expected):
    events = [ToolCallDone(0, "c", "f", "{}")] if calls else [TextDelta("a")]
    out = encode_all([*events, Finished(reason)])
    assert strict(ChatCompletionChunk, out[-2]).choices[0].finish_reason == expected
    output = [ToolCall(call_id="c", name="f", arguments="{}")] if calls else [Message("assistant", [TextPart("a")])]
    body = completion_body(cid="chatcmpl-3", created=1, model="m",
                           result=RunResult("completed", output, None, reason, None))
    assert strict(ChatCompletion, body).choices[0].finish_reason == expected


def test_the_strict_check_can_fail(strict):
    # The validator the other tests rely on rejects what the SDK's models do not define.
    good = json.loads(encode_all([TextDelta("a"), Finished("stop")])[1])
    strict(ChatCompletionChunk, good)
    for broken in ({**good, "created": "1"}, {**good, "object": "chat.completion"},
                   {**good, "choices": [{**good["choices"][0], "finish_reason": "cancelled"}]},
                   {k: v for k, v in good.items() if k != "model"}):
        with pytest.raises(ValidationError):
            strict(ChatCompletionChunk, broken)
    with pytest.raises(AssertionError, match="bogus"):
        strict(ChatCompletionChunk, {**good, "choices": [{**good["choices"][0], "bogus": 1}]})
