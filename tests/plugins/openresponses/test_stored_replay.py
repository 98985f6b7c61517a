"""Event streams rebuilt from stored resources, and logs a restart cut short, against the spec."""

from __future__ import annotations

from kernel import Failed, Finished, ReasoningDelta, RunError, TextDelta, ToolCallDone, ToolCallStart, Usage
from plugins.openresponses.builder import ResponseBuilder
from plugins.openresponses.replay import close_interrupted, events_from_resource, salvage_output
from plugins.openresponses.resource import ResponseParams

from .conftest import check_events


def _built(*events) -> ResponseBuilder:
    builder = ResponseBuilder(ResponseParams(model="m"))
    builder.start()
    builder.feed_many(list(events))
    return builder


def _collapsed(events: list[dict]) -> list[str]:
    types = [e["type"] for e in events]
    return [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]


def test_rebuilt_streams_match_the_resource_and_the_spec():
    for builder in (
        _built(ReasoningDelta("think"), TextDelta("hel"), TextDelta("lo"), Usage(1, 2), Finished("stop")),
        _built(ToolCallStart(0, "c1", "f"), ToolCallDone(0, "c1", "f", '{"a":1}'), Finished("tool_calls")),
        _built(TextDelta("cut"), Finished("length")),
        _built(TextDelta("oops"), Failed(RunError("boom"))),
    ):
        resource = builder.resource()
        rebuilt = events_from_resource(resource)
        check_events(rebuilt)
        assert rebuilt[-1]["response"] == resource
        # The same lifecycle, with each text or arguments value as one delta.
        assert _collapsed(rebuilt) == _collapsed(builder.events)


def test_a_log_cut_mid_item_is_closed_consistently():
    builder = _built(ReasoningDelta("r"), TextDelta("part"), ToolCallStart(0, "c", "f"))
    cut = list(builder.events)
    resource = {**builder.resource(), "status": "failed", "output": salvage_output(cut),
                "error": {"code": "server_error", "message": "restarted", "type": "server_error", "param": None}}
    events = cut + close_interrupted(cut, resource)
    check_events(events)
    assert events[-2]["type"] == "error" and events[-1]["response"] == resource
    assert [i["status"] for i in resource["output"]] == ["completed", "completed", "incomplete"]
    assert resource["output"][1]["content"][0]["text"] == "part"
