"""The SSE parser and the chunk decoder on their own: shapes real servers send."""

from __future__ import annotations

from testsupport.fake_openai import chunk, tool_call_chunks, usage

from kernel import ReasoningDelta, TextDelta, ToolCallDelta, ToolCallDone, ToolCallStart, Usage
from plugins.openai_upstream.decode import ChunkDecoder
from plugins.openai_upstream.sse import SseEvent, SseParser


def parse(text: str) -> list[SseEvent]:
    parser = SseParser()
    events = [parser.feed(line) for line in text.splitlines()]
    events.append(parser.flush())
    return [e for e in events if e is not None]


def test_sse_parser_handles_comments_multiline_data_crlf_and_unterminated_tail():
    text = (": ping\r\n\r\n"
            "data: {\"a\":\r\ndata: 1}\r\n\r\n"
            "event: error\ndata:{\"b\":2}\n\n"
            "id: 7\nretry: 10\n\n"
            "data: [DONE]")  # no blank line before EOF
    events = parse(text)
    assert events == [SseEvent('{"a":\n1}'), SseEvent('{"b":2}', event="error"), SseEvent("[DONE]")]


def feed_all(chunks: list[dict]) -> tuple[ChunkDecoder, list]:
    decoder = ChunkDecoder()
    events = []
    for c in chunks:
        events += decoder.feed(c)
    return decoder, events


def test_parallel_tool_calls_in_pieces():
    decoder, events = feed_all(tool_call_chunks(
        [("call_a", "get_weather", '{"city":"Oslo"}'), ("call_b", "get_time", '{"tz":"CET"}')], pieces=3))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.call_id, s.name) for s in starts] == [(0, "call_a", "get_weather"), (1, "call_b", "get_time")]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(deltas) == 6  # three pieces each, interleaved
    assert "".join(d.arguments for d in deltas if d.index == 0) == '{"city":"Oslo"}'
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [(d.index, d.arguments) for d in done] == [(0, '{"city":"Oslo"}'), (1, '{"tz":"CET"}')]
    # Done events come after every delta of their call.
    assert events.index(done[0]) > max(events.index(d) for d in deltas)
    assert decoder.final_reason() == "tool_calls"


def test_tool_calls_without_index_or_id_and_stop_reason_are_still_tool_calls():
    # Ollama-like: whole calls in one piece each, no index; a server that forgets ids.
    decoder, events = feed_all([
        chunk({"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}]}),
        chunk({"tool_calls": [{"function": {"name": "g", "arguments": ""}}]}),
        chunk({}, finish_reason="stop"),
    ])
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "f"), (1, "g")]
    assert starts[1].call_id.startswith("call_")  # generated when the upstream sent none
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [d.arguments for d in done] == ['{"x": 1}', "{}"]
    assert decoder.final_reason() == "tool_calls"


def test_reasoning_text_refusal_usage_and_finish_reasons():
    decoder, events = feed_all([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think "}),
        chunk({"reasoning": "more"}),
        chunk({"reasoning_content": "same", "reasoning": "same"}),
        chunk({"content": "Hi"}),
        chunk({"refusal": "no"}),
        chunk({"content": None}, finish_reason="length"),
        chunk(usage=usage(10, 5, reasoning=3, cached=4)),
    ])
    assert events == [ReasoningDelta("think "), ReasoningDelta("more"), ReasoningDelta("same"),
                      TextDelta("Hi"), TextDelta("no")]
    assert decoder.usage == Usage(input_tokens=10, output_tokens=5, reasoning_tokens=3, cached_tokens=4)
    assert decoder.final_reason() == "length"
    for upstream, ours in [("content_filter", "content_filter"), ("function_call", "tool_calls"),
                           ("eos", "stop"), ("tool_calls", "tool_calls")]:
        d, _ = feed_all([chunk({}, finish_reason=upstream)])
        assert d.finish_reason == ours


def test_usage_running_totals_keep_the_last():
    decoder, _ = feed_all([chunk({"content": "a"}, usage=usage(1, 1)), chunk({"content": "b"}, usage=usage(1, 2))])
    assert decoder.usage is not None and decoder.usage.output_tokens == 2


def general_rules(chunk_: dict) -> list:
    """What the decoder's general rules give for ``chunk_`` (its one-token shortcut bypassed
    by a usage field, which those rules read and the shortcut never sees)."""
    decoder = ChunkDecoder()
    events = decoder.feed({**chunk_, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    return [e for e in events if not isinstance(e, Usage)]


def test_the_one_token_shortcut_gives_what_the_general_rules_give():
    shapes = [
        chunk({"content": "word"}),
        chunk({"role": "assistant", "content": "hi"}),
        chunk({"content": ""}),
        chunk({"content": "x", "refusal": "no"}),  # two texts: general rules
        chunk({"content": "x", "reasoning_content": "think"}),
        chunk({"content": "end"}, finish_reason="stop"),
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        {"choices": [{"index": False, "delta": {"content": "a bool is not an index"}}]},
        {"choices": [{"delta": {"content": "no index"}}]},
        {"choices": [{"index": 0, "delta": {"content": 5}}]},
        {"choices": [{"index": 0, "message": {"content": "whole"}}]},
    ]
    for shape in shapes:
        decoder = ChunkDecoder()
        assert decoder.feed(shape) == general_rules(shape), shape
        assert decoder.chunks == 1
    decoder = ChunkDecoder()
    decoder.feed(chunk({"content": "end"}, finish_reason="length"))
    assert decoder.finish_reason == "length"
