"""Custom (freeform) tools over a Chat Completions upstream: offered as one-string functions, unwrapped back."""

from __future__ import annotations

import json

from kernel import Limits, Message, TextPart, ToolCall, ToolCallDelta, ToolCallDone, ToolCallStart, ToolSpec, Turn
from plugins.openai_upstream.custom_tools import CustomCallFilter, unwrap_input
from plugins.openai_upstream.request import build_body
from plugins.openai_upstream.settings import UpstreamOptions

PATCH = ToolSpec(name="apply_patch", tool_kind="custom", description="Edit files",
                 format={"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'})


def test_custom_tool_is_offered_as_a_one_string_function_and_history_is_wrapped():
    turn = Turn(agent="a", tools=[PATCH], input=[Message(role="user", parts=[TextPart("go")])], history=[
        ToolCall(call_id="c1", name="apply_patch", arguments="*** Begin Patch\n", tool_kind="custom")],
        limits=Limits(verbosity="low", hints={"service_tier": "flex", "truncation": "auto"}))
    body = build_body(turn, UpstreamOptions(base_url="http://127.0.0.1:9/v1", model="m"))
    [tool] = body["tools"]
    assert tool["function"]["name"] == "apply_patch"
    assert tool["function"]["parameters"]["required"] == ["input"]
    assert "lark grammar" in tool["function"]["description"] and "Begin Patch" in tool["function"]["description"]
    call = body["messages"][0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch\n"}
    # verbosity and the forwardable hints go upstream; truncation has no Chat field.
    assert (body["verbosity"], body["service_tier"]) == ("low", "flex") and "truncation" not in body


def test_upstream_call_of_a_custom_tool_comes_back_unwrapped():
    filt = CustomCallFilter({"apply_patch"})
    start = filt.apply(ToolCallStart(index=0, call_id="c", name="apply_patch"))
    assert start is not None and start.tool_kind == "custom"
    assert filt.apply(ToolCallDelta(index=0, arguments='{"input": "*** Beg')) is None  # wrapped JSON held back
    done = filt.apply(ToolCallDone(index=0, call_id="c", name="apply_patch", arguments='{"input": "x\\ny"}'))
    assert done is not None and (done.tool_kind, done.arguments) == ("custom", "x\ny")
    other = filt.apply(ToolCallDone(index=1, call_id="d", name="get_weather", arguments="{}"))
    assert other is not None and other.tool_kind == "function" and other.arguments == "{}"
    assert unwrap_input("not json") == "not json"  # a model that ignored the wrapper keeps its text
