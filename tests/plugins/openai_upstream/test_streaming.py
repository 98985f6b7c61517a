"""Upstream SSE -> run events, end to end through the kernel's run seam."""

from __future__ import annotations

import json

from testsupport.fake_openai import (
    chunk,
    completion,
    json_reply,
    stream_reply,
    text_chunks,
    tool_call_chunks,
    usage,
)

from kernel import (
    Finished,
    Message,
    Reasoning,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
    Usage,
)

TOOLS = [ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}}),
         ToolSpec(name="get_time", parameters={"type": "object", "properties": {}})]


async def test_text_stream_with_usage(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("Hel", "lo", " world", usage_=usage(12, 3, cached=2))))
    async with app.test_app():
        events, result = await run_turn(app, user_turn("hi"))
    assert events == [TextDelta("Hel"), TextDelta("lo"), TextDelta(" world"),
                      Usage(input_tokens=12, output_tokens=3, cached_tokens=2), Finished("stop")]
    assert (result.status, result.text, result.finish_reason) == ("completed", "Hello world", "stop")
    assert fake.chat_requests[0].completed.is_set()


async def test_connection_is_reused_between_requests(upstream_app, fake, user_turn, run_turn):
    """After [DONE] the body's end is read, so the pooled connection serves the next run."""
    app = upstream_app()
    fake.script(stream_reply(text_chunks("one")), stream_reply(text_chunks("two")))
    async with app.test_app():
        await run_turn(app, user_turn())
        await run_turn(app, user_turn())
    first, second = fake.chat_requests
    assert first.peer == second.peer and first.peer[1] > 0


async def test_parallel_tool_calls_streamed_in_pieces(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    calls = [("call_w", "get_weather", '{"city": "Oslo"}'), ("call_t", "get_time", "{}")]
    fake.script(stream_reply(tool_call_chunks(calls, pieces=4, text="Let me check.", usage_=usage(30, 20))))
    async with app.test_app():
        events, result = await run_turn(app, user_turn("weather and time?", tools=TOOLS))
    kinds = [e.kind for e in events]
    assert kinds[0] == "text_delta"
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.call_id, s.name) for s in starts] == [(0, "call_w", "get_weather"), (1, "call_t", "get_time")]
    pieces = [e for e in events if isinstance(e, ToolCallDelta) and e.index == 0]
    assert len(pieces) == 4 and "".join(p.arguments for p in pieces) == '{"city": "Oslo"}'
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [(d.call_id, d.arguments) for d in done] == [("call_w", '{"city": "Oslo"}'), ("call_t", "{}")]
    assert kinds[-2:] == ["usage", "finished"] and result.finish_reason == "tool_calls"
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("call_w", "get_weather", {"city": "Oslo"}), ("call_t", "get_time", {})]
    assert isinstance(result.output[0], Message) and result.text == "Let me check."


async def test_forbidden_tool_calls_are_suppressed_by_the_kernel(upstream_app, fake, user_turn, run_turn):
    """The upstream only sees allowed tools; a model calling another one anyway is filtered."""
    app = upstream_app()
    calls = [("c1", "get_time", "{}"), ("c2", "get_weather", '{"city":"Rome"}')]
    fake.script(stream_reply(tool_call_chunks(calls)))
    async with app.test_app():
        _, result = await run_turn(app, user_turn("x", tools=TOOLS, tool_choice=ToolChoice(allowed=["get_weather"])))
    assert [t["function"]["name"] for t in fake.chat_requests[0].json["tools"]] == ["get_weather"]
    assert [c.call_id for c in result.tool_calls] == ["c2"]


async def test_reasoning_content_and_reasoning_fields(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(
        stream_reply(text_chunks("42", reasoning=["Let me ", "think."], usage_=usage(5, 9, reasoning=6))),
        stream_reply(text_chunks("ok", reasoning=["Ollama style"], reasoning_field="reasoning")),
    )
    async with app.test_app():
        events, result = await run_turn(app, user_turn("?"))
        events2, _ = await run_turn(app, user_turn("?"))
    assert events[:3] == [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("42")]
    assert isinstance(result.output[0], Reasoning) and result.output[0].text == "Let me think."
    assert result.usage is not None and result.usage.reasoning_tokens == 6
    assert events2[0] == ReasoningDelta("Ollama style")


async def test_finish_reasons_length_and_content_filter(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("cut", finish_reason="length")),
                stream_reply(text_chunks("", finish_reason="content_filter")))
    async with app.test_app():
        _, long = await run_turn(app, user_turn())
        _, filtered = await run_turn(app, user_turn())
    assert (long.status, long.finish_reason, long.text) == ("incomplete", "length", "cut")
    assert (filtered.status, filtered.finish_reason) == ("incomplete", "content_filter")


async def test_done_without_finish_reason_and_finish_without_done(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply([chunk({"content": "a"})]),  # [DONE] but no finish_reason
                stream_reply(text_chunks("b"), done=False))  # finish_reason, then EOF without [DONE]
    async with app.test_app():
        _, first = await run_turn(app, user_turn())
        _, second = await run_turn(app, user_turn())
    assert (first.status, first.text, first.finish_reason) == ("completed", "a", "stop")
    assert (second.status, second.text) == ("completed", "b")


async def test_server_that_ignores_stream_true_answers_with_json(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(json_reply(completion("whole answer", reasoning="hmm", usage_=usage(3, 2))),
                json_reply(completion(None, tool_calls=[("c9", "get_time", "{}")], finish_reason="tool_calls")))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
        _, calls = await run_turn(app, user_turn(tools=TOOLS))
    assert [e.kind for e in events] == ["reasoning_delta", "text_delta", "usage", "finished"]
    assert result.text == "whole answer" and result.usage is not None and result.usage.input_tokens == 3
    assert [c.call_id for c in calls.tool_calls] == ["c9"] and calls.finish_reason == "tool_calls"


async def test_follow_up_turn_sends_tool_results(upstream_app, fake, user_turn, run_turn):
    """A two-step tool loop in one session: the second request carries call and result."""
    from kernel import ToolResult

    app = upstream_app()
    fake.script(stream_reply(tool_call_chunks([("call_1", "get_time", "{}")])), stream_reply(text_chunks("Noon.")))
    async with app.test_app():
        _, first = await run_turn(app, user_turn("time?", tools=TOOLS, session_key="k"))
        follow = user_turn("", tools=TOOLS, session_key="k")
        follow.input = [ToolResult(call_id="call_1", output="12:00")]
        _, second = await run_turn(app, follow)
    assert isinstance(first.output[0], ToolCall) and second.text == "Noon."
    assert fake.chat_requests[1].json["messages"] == [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]


async def test_invalid_utf8_in_a_chunk_reads_as_replacement_characters(upstream_app, fake, user_turn, run_turn):
    """The fast path hands the decoder raw bytes: invalid UTF-8 must read as the general
    parser reads it (U+FFFD), not fail the run."""
    app = upstream_app()
    bad = b'data: {"choices":[{"index":0,"delta":{"content":"caf\xff"}}]}\n\n'
    fake.script(stream_reply([bad, *text_chunks("!")]))
    async with app.test_app():
        events, result = await run_turn(app, user_turn())
    assert result.status == "completed" and result.text == "caf\ufffd!"
    assert events[0] == TextDelta("caf\ufffd")


async def test_a_stream_mixing_plain_and_named_events_reads_in_order(upstream_app, fake, user_turn, run_turn):
    """Reads that the fast path takes and reads it leaves to the parser, in one stream."""
    app = upstream_app()
    plain = [chunk({"content": w}) for w in ("a", "b")]
    fake.script(stream_reply([*plain, b": keep-alive\n\n", b"event: message\ndata: " +
                              json.dumps(chunk({"content": "c"})).encode() + b"\n\n",
                              b'data: {"choices":[{"index":0,"delta":{"content":"d"}}]}\r\n\r\n',
                              *text_chunks("e")]))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.text == "abcde"
