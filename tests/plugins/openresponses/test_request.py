"""Parsing a CreateResponseBody into a turn, without a server."""

from __future__ import annotations

import pytest

from kernel import ApiError, Message, Reasoning, ToolCall, ToolResult
from kernel.media import MediaLimits, MediaLoader
from plugins.openresponses.items import resolve_items
from plugins.openresponses.request import build_turn, parse_create_body


async def turn_of(body: dict):
    parsed = parse_create_body(body)
    items = await resolve_items(parsed.items, MediaLoader(MediaLimits()))
    return parsed, build_turn(parsed, items, agent="main")


def error_of(body: dict) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_create_body(body)
    assert info.value.status == 400
    return info.value


async def test_string_input_is_one_user_message():
    _, turn = await turn_of({"input": "hi"})
    assert turn.history == [] and [(m.role, m.text) for m in turn.input] == [("user", "hi")]
    assert turn.surface == "responses" and turn.session_key is None


async def test_current_input_is_the_trailing_user_and_tool_items():
    _, turn = await turn_of({"input": [
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "1"},
        {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "2"}]},
    ]})
    assert [type(i) for i in turn.history] == [Message, ToolCall, ToolCall]
    assert [(i.call_id, i.output) for i in turn.input] == [("a", "1"), ("b", "2")]
    assert all(isinstance(i, ToolResult) for i in turn.input)


async def test_assistant_last_means_no_new_input_and_nothing_dropped():
    _, turn = await turn_of({"input": [{"role": "user", "content": "q"},
                                       {"role": "assistant", "content": "partial"},
                                       {"type": "reasoning", "summary": [],
                                        "content": [{"type": "reasoning_text", "text": "hmm"}]}]})
    assert turn.input == [] and len(turn.history) == 3
    assert isinstance(turn.history[2], Reasoning) and turn.history[2].text == "hmm"


async def test_system_text_order_and_limits():
    parsed, turn = await turn_of({
        "instructions": "I", "input": [{"role": "developer", "content": "D"}, {"role": "user", "content": "u"},
                                       {"role": "system", "content": [{"type": "input_text", "text": "S"}]}],
        "max_output_tokens": 64, "temperature": 0.3, "top_p": 0.5, "max_tool_calls": 2,
        "parallel_tool_calls": False, "metadata": {"a": "b"}, "user": "me",
    })
    assert turn.system == "I\n\nD\n\nS"
    limits = turn.limits
    assert (limits.max_output_tokens, limits.temperature, limits.top_p, limits.max_tool_calls,
            limits.parallel_tool_calls) == (64, 0.3, 0.5, 2, False)
    assert turn.metadata == {"a": "b"} and turn.user == "me"
    assert parsed.params.instructions == "I"


@pytest.mark.parametrize(("choice", "mode", "function", "allowed"), [
    ("none", "none", None, None),
    ("auto", "auto", None, None),
    ("required", "required", None, None),
    ({"type": "function", "name": "g"}, "required", "g", None),
    ({"type": "allowed_tools", "tools": [{"type": "function", "name": "g"}]}, "auto", None, ["g"]),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}, "required",
     None, ["f"]),
])
def test_tool_choice_shapes(choice, mode, function, allowed):
    parsed = parse_create_body({"input": "x", "tool_choice": choice, "tools": [
        {"type": "function", "name": "f"}, {"type": "function", "function": {"name": "g"}}]})
    tc = parsed.tool_choice
    assert (tc.mode, tc.function, tc.allowed) == (mode, function, allowed)
    assert [t.name for t in parsed.tools] == ["f", "g"]
    assert parsed.tools[0].parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
     "input[1].content[0].text", "invalid_type"),
    ({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
    ({"input": "x", "metadata": {"k": "v" * 513}}, "metadata.k", "invalid_value"),
    ({"input": "x", "top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"input": "x", "max_tool_calls": 0}, "max_tool_calls", "invalid_value"),
    ({"input": "x", "parallel_tool_calls": 1}, "parallel_tool_calls", "invalid_type"),
    ({"input": "x", "truncation": "sometimes"}, "truncation", "invalid_value"),
    ({"input": "x", "safety_identifier": "s" * 65}, "safety_identifier", "invalid_value"),
    ({"input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]}, "input[0].call_id",
     "invalid_value"),
    ({"input": [{"type": "reasoning", "summary": [{"type": "summary_text"}]}]}, "input[0].summary[0].text",
     "missing_required_parameter"),
    ({"input": ["just a string"]}, "input[0]", "invalid_type"),
    ({"input": "x" * (10 * 1024 * 1024 + 1)}, "input", "string_above_max_length"),
    ({"input": [{"role": "user", "content": "x" * (10 * 1024 * 1024 + 1)}]}, "input[0].content",
     "string_above_max_length"),
    ({"input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort", "invalid_value"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "bad name", "schema": {}}}},
     "text.format.name", "invalid_value"),
])
def test_errors_name_the_field_path(body, param, code):
    error = error_of(body)
    assert (error.param, error.code) == (param, code)
    assert param in error.message


def test_unknown_top_level_fields_are_named_not_refused():
    parsed = parse_create_body({"input": "x", "conversation": None, "some_vendor_flag": True})
    assert parsed.params.model is None
    # Not dropped quietly: the service warns and names them in x-kernel-ignored-fields.
    assert parsed.ignored_fields == ["some_vendor_flag"]


async def test_user_message_with_media_stays_pending_until_resolved():
    parsed = parse_create_body({"input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "a.txt", "file_data": "aGk="}]}]})
    assert parsed.needs_resolution
    [message] = await resolve_items(parsed.items, MediaLoader(MediaLimits()))
    assert message.parts[0].text == "hi" and message.parts[0].filename == "a.txt"
