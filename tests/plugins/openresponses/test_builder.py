"""The ResponseBuilder state machine and the SSE helpers, fed with run events directly."""

from __future__ import annotations

import asyncio
import json

from testsupport.spec import assert_valid

from kernel import (
    Failed,
    Finished,
    ReasoningDelta,
    RunError,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Usage,
)
from plugins.openresponses.builder import ResponseBuilder
from plugins.openresponses.resource import ResponseParams
from plugins.openresponses.stream import DONE_CHUNK, EventFollower, encode_event, sse_chunks


def build(*events, params: ResponseParams | None = None) -> ResponseBuilder:
    builder = ResponseBuilder(params or ResponseParams(model="m"))
    builder.start()
    for event in events:
        builder.feed(event)
    return builder


def test_text_reasoning_and_calls_in_order(sse):
    b = build(ReasoningDelta("think"), TextDelta("Hel"), TextDelta("lo"),
              ToolCallStart(0, "c0", "f"), ToolCallDelta(0, '{"a"'), ToolCallDelta(0, ":1}"),
              ToolCallDone(0, "c0", "f", '{"a":1}'), TextDelta("after"), Usage(3, 4, reasoning_tokens=1),
              Finished("tool_calls"))
    sse.check(b.events)
    assert b.done and b.status == "completed"
    final = b.resource()
    assert final == b.events[-1]["response"]
    assert [(i["type"], i["status"]) for i in final["output"]] == [
        ("reasoning", "completed"), ("message", "completed"), ("function_call", "completed"),
        ("message", "completed")]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["output"][2]["arguments"] == '{"a":1}'
    assert final["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7,
                              "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 1}}
    assert_valid("ResponseResource", final)


def test_snapshots_in_events_never_change_afterwards():
    b = build(TextDelta("a"))
    added = json.dumps(b.events)
    b.feed(TextDelta("b"))
    b.feed(Finished())
    assert json.dumps(b.events[: len(json.loads(added))]) == added


def test_call_without_deltas_still_streams_its_arguments(sse):
    b = build(ToolCallDone(0, "c0", "f", '{"x":2}'), Finished("tool_calls"))
    sse.check(b.events)
    assert [e["type"] for e in b.events[2:-1]] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]
    assert b.events[3]["delta"] == '{"x":2}'


def test_interleaved_parallel_calls(sse):
    b = build(ToolCallStart(0, "c0", "f"), ToolCallStart(1, "c1", "g"), ToolCallDelta(1, "{}"),
              ToolCallDelta(0, "{}"), ToolCallDone(1, "c1", "g", "{}"), ToolCallDone(0, "c0", "f", "{}"),
              Finished("tool_calls"))
    sse.check(b.events)
    assert [i["call_id"] for i in b.resource()["output"]] == ["c0", "c1"]


def test_an_empty_run_still_answers_with_an_announced_message(sse):
    b = build(Finished())
    sse.check(b.events)
    assert b.resource()["output"][0]["content"][0]["text"] == ""
    assert "response.output_item.added" in [e["type"] for e in b.events]


def test_length_cuts_the_open_item(sse):
    b = build(ToolCallStart(0, "c0", "f"), ToolCallDone(0, "c0", "f", "{}"), TextDelta("partial"),
              Finished("length"))
    sse.check(b.events)
    final = b.resource()
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["status"] for i in final["output"]] == ["completed", "incomplete"]
    assert b.events[-1]["type"] == "response.incomplete"


def test_cancelled_run(sse):
    b = build(TextDelta("x"), Finished("cancelled"))
    sse.check(b.events)
    assert b.status == "cancelled" and b.events[-1]["type"] == "response.incomplete"


def test_failure_mid_item(sse):
    error = RunError("upstream broke", code="upstream_error", status=502)
    b = build(TextDelta("x"), ToolCallStart(0, "c", "f"), Failed(error))
    sse.check(b.events)
    assert [e["type"] for e in b.events[-3:]] == ["response.output_item.done", "error", "response.failed"]
    assert b.events[-2]["error"] == {"type": "server_error", "code": "upstream_error", "message": "upstream broke",
                                     "param": None}
    final = b.resource()
    assert final["error"]["code"] == "upstream_error" and final["status"] == "failed"
    assert [i["status"] for i in final["output"]] == ["completed", "incomplete"]
    # Nothing after the terminal event.
    b.feed(TextDelta("late"))
    assert b.events[-1]["type"] == "response.failed"


def test_queued_then_running(sse):
    b = ResponseBuilder(ResponseParams(model="m", background=True))
    b.start(queued=True)
    assert b.resource()["status"] == "queued"
    b.feed(TextDelta("hi"))
    b.feed(Finished())
    sse.check(b.events)
    assert [e["type"] for e in b.events[:3]] == ["response.created", "response.queued", "response.in_progress"]


def test_a_failing_listener_does_not_break_the_response():
    b = ResponseBuilder(ResponseParams(model="m"))
    seen = []
    b.listeners.append(lambda e: 1 / 0)
    b.listeners.append(seen.append)
    b.start()
    b.feed(Finished())
    assert len(seen) == len(b.events) and b.done


def test_encode_event_is_one_lf_only_chunk():
    event = {"type": "response.output_text.delta", "sequence_number": 3, "delta": "a\r\nb\u2028c"}
    chunk = encode_event(event)
    assert b"\r" not in chunk and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 3
    head, data, _, _ = chunk.split(b"\n")
    assert head == b"event: response.output_text.delta"
    assert json.loads(data[len(b"data: "):]) == event


async def test_followers_replay_then_follow_live():
    b = ResponseBuilder(ResponseParams(model="m"))
    follower = EventFollower(b)
    b.start()
    b.feed(TextDelta("a"))

    async def collect(after: int) -> list[int]:
        return [e["sequence_number"] async for e in follower.follow(after)]

    early = asyncio.create_task(collect(-1))
    late = asyncio.create_task(collect(3))
    await asyncio.sleep(0)
    b.feed(TextDelta("b"))
    await asyncio.sleep(0)
    b.feed(Finished())
    total = len(b.events)
    assert await asyncio.wait_for(early, 5) == list(range(total))
    assert await asyncio.wait_for(late, 5) == list(range(4, total))
    # Everything already recorded goes out as one piece of whole event blocks (the
    # server frames each block as its own HTTP chunk), then [DONE].
    chunks = [c async for c in sse_chunks(follower)]
    assert chunks == [b"".join(encode_event(e) for e in b.events), DONE_CHUNK]
    assert chunks[0].count(b"\n\n") == total


async def test_follow_batches_hands_over_what_each_wake_up_finds():
    b = ResponseBuilder(ResponseParams(model="m"))
    follower = EventFollower(b)
    b.start()
    seen: list[list[int]] = []

    async def collect() -> None:
        async for batch in follower.follow_batches():
            seen.append([e["sequence_number"] for e in batch])

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    first = len(b.events)
    b.feed(TextDelta("a"))
    b.feed(TextDelta("b"))
    await asyncio.sleep(0)
    b.feed(Finished())
    await asyncio.wait_for(task, 5)
    assert seen[0] == list(range(first))
    assert [n for batch in seen for n in batch] == list(range(len(b.events)))
    assert len(seen) == 3 and seen[-1][-1] == len(b.events) - 1


def test_feed_many_without_events_builds_the_same_resource():
    events = [ReasoningDelta("a"), ReasoningDelta("b"), TextDelta("x"), TextDelta(""), TextDelta("y"),
              ToolCallStart(0, "c", "f"), ToolCallDelta(0, "{}"), ToolCallDone(0, "c", "f", "{}"), TextDelta("z"),
              Usage(1, 2), Finished("length")]

    def normalised(builder: ResponseBuilder) -> dict:
        body = builder.resource()
        body["output"] = [{k: v for k, v in i.items() if k != "id"} for i in body["output"]]
        return {k: v for k, v in body.items() if k not in ("id", "created_at")}

    live = build(*events)
    quiet = ResponseBuilder(ResponseParams(model="m"), record_events=False)
    quiet.start()
    quiet.feed_many(events)
    assert quiet.events == [] and quiet.done
    assert normalised(quiet) == normalised(live)
    assert [i["status"] for i in quiet.resource()["output"]] == ["completed", "completed", "completed", "incomplete"]
