"""Parsing a Chat Completions body into a neutral Turn (no server needed)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kernel import ApiError, FilePart, ImagePart, Message, TextPart, ToolCall, ToolResult
from kernel.media import MediaLimits, MediaLoader
from plugins.chat_completions.request import MAX_TOOLS, parse_and_load, parse_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                                      "strict": True}},
    {"type": "function", "function": {"name": "get_time"}},
]


async def parse(body: dict[str, Any], limits: MediaLimits | None = None):
    return await parse_and_load(body, agent="main", media=MediaLoader(limits or MediaLimits()))


class NoFetch:
    """A media source that must never be asked: parsing alone does no I/O."""

    async def image(self, url: str, **kw: Any) -> ImagePart:
        raise AssertionError(f"image {url} loaded during parsing")

    async def file(self, **kw: Any) -> FilePart:
        raise AssertionError("file loaded during parsing")


async def error_of(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        await parse(body)
    assert info.value.status == 400
    return info.value


async def test_messages_split_into_system_history_and_input():
    req = await parse({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in "},
                                          {"type": "text", "text": "English."}]},
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]})
    turn = req.turn
    assert turn.system == "You are terse.\n\nAnswer in English."
    assert turn.history == [
        Message("user", [TextPart("What is the weather?")]),
        ToolCall(call_id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),
    ]
    # The trailing run of tool and user messages is the new input.
    assert turn.input == [ToolResult(call_id="call_1", output="sunny"), Message("user", [TextPart("And tomorrow?")])]
    assert turn.surface == "chat" and turn.agent == "main"
    assert req.stream is False and req.include_usage is False


async def test_assistant_text_and_tool_calls_become_separate_items():
    req = await parse({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check. "}], "refusal": "No.",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    ]})
    assert req.turn.input == []
    assert req.turn.history[1:] == [Message("assistant", [TextPart("Let me check. No.")]),
                                    ToolCall(call_id="c1", name="get_time", arguments="{}")]


async def test_options_map_to_limits_tools_and_formats():
    req = await parse({
        "messages": [{"role": "user", "content": "x"}],
        "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "parallel_tool_calls": False, "max_tokens": 50, "max_completion_tokens": 20,
        "temperature": 0.5, "top_p": 1, "stop": "END", "user": "ann", "metadata": {"k": "v"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"},
                                                                   "strict": True}},
        "stream": True, "stream_options": {"include_usage": True}, "n": 1,
        "presence_penalty": -2, "frequency_penalty": 0.1, "reasoning_effort": "minimal",
        # Accepted and ignored, as documented.
        "seed": 7, "logprobs": False, "store": False, "top_k": 3,
    })
    turn = req.turn
    assert [t.name for t in turn.tools] == ["get_weather", "get_time"]
    assert turn.tools[0].description == "Weather for a city" and turn.tools[0].strict is True
    assert turn.tools[1].parameters == {"type": "object", "properties": {}}
    assert (turn.tool_choice.mode, turn.tool_choice.function) == ("required", "get_time")
    limits = turn.limits
    assert (limits.max_output_tokens, limits.temperature, limits.top_p, limits.stop) == (20, 0.5, 1.0, ["END"])
    assert limits.parallel_tool_calls is False
    assert (limits.presence_penalty, limits.frequency_penalty, limits.reasoning_effort) == (-2.0, 0.1, "minimal")
    assert turn.response_format == {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    assert turn.user == "ann" and turn.metadata == {"k": "v"}
    assert req.stream is True and req.include_usage is True


@pytest.mark.parametrize(("choice", "mode", "allowed"), [
    ("none", "none", None), ("auto", "auto", None), ("required", "required", None),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}, "required", ["get_weather"]),
])
async def test_tool_choice_forms(choice, mode, allowed):
    req = await parse({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": choice})
    assert (req.turn.tool_choice.mode, req.turn.tool_choice.allowed, req.turn.tool_choice.function) == (
        mode, allowed, None)


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"}),
])
async def test_response_format_text_and_json_object(fmt, expected):
    req = await parse({"messages": [{"role": "user", "content": "x"}], "response_format": fmt})
    assert req.turn.response_format == expected


async def test_image_and_file_parts_go_through_the_media_loader():
    req = await parse({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": "data:text/plain;base64,"
                                  + base64.b64encode(b"hello file").decode()}},
    ]}]})
    parts = req.turn.input[0].parts
    assert isinstance(parts[1], ImagePart) and parts[1].media_type == "image/png" and parts[1].detail == "low"
    assert parts[2] == FilePart(filename="notes.txt", media_type="text/plain", text="hello file")


@pytest.mark.parametrize(("body", "param", "words"), [
    ({}, "messages", "Missing required parameter"),
    ({"messages": []}, "messages", "empty array"),
    ({"messages": "hi"}, "messages", "expected an array"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "not a supported role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "Missing required"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text",
     "expected a string"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [
        {"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[1].content[1].image_url", "http(s) URL"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].image_url.url", "Missing required"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{PNG}", "detail": "ultra"}}]}]}, "messages[0].content[0].image_url.detail",
     "not one of"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "", "format": "wav"}}]}]},
     "messages[0].content[0]", "Audio input is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
     "messages[0].content[0].file.file_id", "no Files API"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type",
     "not a content part type"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type", "not allowed here"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "Missing required"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                         "function": {"name": "f", "arguments": {}}}]}]},
     "messages[0].tool_calls[0].function.arguments", "JSON-encoded string"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role", "deprecated"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "only one choice is supported"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n", "only one choice is supported"),
    ({"messages": [{"role": "user", "content": "x"}], "n": True}, "n", "expected an integer, but got a boolean"),
    ({"messages": [{"role": "user", "content": "x"}], "n": "1"}, "n", "expected an integer, but got a string"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS + 1)]}, "tools", "at most 128"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "5"}, "max_completion_tokens",
     "expected an integer"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature", "out of range"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}, "stream_options",
     "only allowed when 'stream' is true"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search", "name": "x"}]},
     "tools[0].type", "not supported"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name",
     "duplicate"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name",
     "no function named 'nope'"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "tool_choice",
     "at least one function"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}, "tool_choice", "is not one of"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {}}},
     "response_format.json_schema.name", "Missing required"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, "response_format.type",
     "is not one of"),
    ({"messages": [{"role": "user", "content": "x"}], "metadata": {"k": 1}}, "metadata.k", "strings"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}, "functions", "send 'tools'"),
    ({"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]}, "modalities", "only"),
])
async def test_invalid_fields_are_400s_naming_the_path(body, param, words):
    err = await error_of(body)
    assert err.param == param
    assert words in err.message


async def test_parsing_checks_every_field_before_loading_any_media():
    # The image would be loaded (or refused) only after all of the body is known to be valid.
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}},
        {"type": "file", "file": {"file_data": "aGk=", "filename": "a.txt"}}]}],
        "tools": [{"type": "function", "function": {"name": "bad name"}}]}
    with pytest.raises(ApiError) as info:
        parse_request(body, agent="main")
    assert info.value.param == "tools[0].function.name"
    body.pop("tools")
    req = parse_request(body, agent="main")
    assert req.turn.input == [] and req.messages.has_media
    with pytest.raises(AssertionError, match="loaded during parsing"):
        await req.load_media(NoFetch())


async def test_requests_without_media_skip_the_loader():
    req = parse_request({"messages": [{"role": "user", "content": "hi"}]}, agent="main")
    turn = await req.load_media(NoFetch())
    assert turn.input == [Message("user", [TextPart("hi")])]


def test_tool_messages_must_answer_a_call_made_in_the_request():
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]}
    answered = parse_request({"messages": [{"role": "user", "content": "x"}, call,
                                           {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}, agent="main")
    answered.require_answered_calls()
    orphan = parse_request({"messages": [{"role": "user", "content": "x"}, call,
                                         {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                         {"role": "tool", "tool_call_id": "c2", "content": "?"}]}, agent="main")
    with pytest.raises(ApiError) as info:
        orphan.require_answered_calls()
    assert info.value.status == 400 and info.value.param == "messages[3].tool_call_id"
    assert "'c2' answers no tool call" in info.value.message
    # A result that comes before its call does not answer it either.
    early = parse_request({"messages": [{"role": "tool", "tool_call_id": "c1", "content": "ok"}, call]},
                          agent="main")
    assert early.messages.unanswered_results == [("messages[0].tool_call_id", "c1")]
