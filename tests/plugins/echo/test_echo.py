"""The echo provider: deterministic word-by-word echo, limits, forced tool calls with valid arguments."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from kernel import (
    FilePart,
    Finished,
    ImagePart,
    Message,
    ProviderError,
    Reasoning,
    ReasoningDelta,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Turn,
    Usage,
)
from kernel.errors import ConfigError
from plugins.echo.provider import EchoOptions, EchoProvider
from plugins.echo.schema_instance import instance_for


def user(text: str) -> Message:
    return Message(role="user", parts=[TextPart(text)])


async def events(turn: Turn, **options) -> list:
    provider = EchoProvider("echo", EchoOptions(**options))
    return [ev async for ev in provider.stream(turn)]


async def test_streams_the_last_user_text_word_by_word():
    turn = Turn(agent="main", input=[user("Hello there,  brave new world")],
                history=[user("older"), Message("assistant", [TextPart("reply")])])
    out = await events(turn)
    assert [ev.text for ev in out if isinstance(ev, TextDelta)] == ["Hello ", "there,  ", "brave ", "new ", "world"]
    # Input "tokens" are the words of every item as the model sees it ("user: older" is two).
    assert out[-2:] == [Usage(input_tokens=2 + 2 + 6, output_tokens=5), Finished(reason="stop")]
    assert "".join(ev.text for ev in out if isinstance(ev, TextDelta)) == "Hello there,  brave new world"


async def test_it_is_deterministic():
    turn = Turn(agent="main", input=[user("same in, same out")],
                tools=[ToolSpec(name="t", parameters={"type": "object", "properties": {"q": {"type": "string"}}})],
                tool_choice=ToolChoice(mode="required"))
    assert await events(turn) == await events(turn)


async def test_max_output_tokens_finishes_with_length():
    turn = Turn(agent="main", input=[user("one two three four five")])
    turn.limits.max_output_tokens = 2
    out = await events(turn)
    assert [ev.text for ev in out if isinstance(ev, TextDelta)] == ["one ", "two "]
    assert out[-2:] == [Usage(input_tokens=6, output_tokens=2), Finished(reason="length")]
    turn.limits.max_output_tokens = 5  # exactly enough: a normal stop
    assert (await events(turn))[-1] == Finished(reason="stop")


async def test_a_tool_result_is_echoed_when_it_is_newest():
    turn = Turn(agent="main", history=[user("weather?"), ToolCall(call_id="c", name="w", arguments="{}")],
                input=[ToolResult(call_id="c", output="sunny and warm")])
    out = await events(turn)
    assert "".join(ev.text for ev in out if isinstance(ev, TextDelta)) == "sunny and warm"


async def test_transcript_mode_shows_everything_the_model_sees():
    turn = Turn(
        agent="main",
        system="Be brief.",
        history=[user("hi"), Reasoning(text="thinking"), ToolCall(call_id="c1", name="f", arguments='{"a":1}'),
                 ToolResult(call_id="c1", output="42")],
        input=[Message("user", [TextPart("see "), ImagePart(url="data:image/png;base64,AA", media_type="image/png"),
                                FilePart(filename="n.txt", media_type="text/plain", text="note")])],
    )
    text = "".join(ev.text for ev in await events(turn, mode="transcript") if isinstance(ev, TextDelta))
    assert text.splitlines() == [
        "system: Be brief.",
        "user: hi",
        "reasoning: thinking",
        'tool_call f({"a":1}) [c1]',
        "tool_result [c1]: 42",
        'user: see  [image omitted: this model cannot see images (image/png)] <file name="n.txt" type="text/plain">',
        "note",
        "</file>",
    ]
    seeing = "".join(ev.text for ev in await events(turn, mode="transcript", accepts_images=True)
                     if isinstance(ev, TextDelta))
    assert "[image image/png]" in seeing


async def test_reasoning_comes_first_when_enabled():
    out = await events(Turn(agent="main", input=[user("a b c")]), reasoning=True)
    assert out[0] == ReasoningDelta("The user said 3 words.")
    assert isinstance(out[1], TextDelta)


async def test_fail_after_words_raises_a_provider_error_mid_stream():
    provider = EchoProvider("flaky", EchoOptions(fail_after_words=2))
    seen = []
    with pytest.raises(ProviderError) as info:
        async for ev in provider.stream(Turn(agent="main", input=[user("a b c d")])):
            seen.append(ev)
    assert [ev.text for ev in seen] == ["a ", "b "]
    assert info.value.error.status == 500
    assert "'flaky' failed after 2 words" in info.value.error.message


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Place(BaseModel):
    city: Annotated[str, Field(min_length=2, max_length=40)]
    country: str | None = None


class Forecast(BaseModel):
    """A realistic tool schema (pydantic emits $defs and $ref for nested models and enums)."""

    place: Place
    unit: Unit
    days: Annotated[int, Field(ge=1, le=14)]
    hours: Annotated[list[Annotated[int, Field(ge=0, lt=24)]], Field(min_length=2)]
    confidence: Annotated[float, Field(gt=0, le=1)]
    step: Annotated[int, Field(multiple_of=5, gt=12)]
    mode: Literal["fast", "slow"]
    tags: Annotated[list[str], Field(min_length=3, json_schema_extra={"uniqueItems": True})]
    detailed: bool = False


SCHEMAS = {
    "pydantic": Forecast.model_json_schema(),
    "no_params": {"type": "object", "properties": {}},
    "strict": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": ["integer", "null"]}},
               "required": ["q", "n"], "additionalProperties": False},
    "bounds": {"type": "object", "properties": {
        "neg": {"type": "integer", "exclusiveMaximum": 0},
        "tiny": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        "quarter": {"type": "number", "multipleOf": 0.25, "minimum": 0.3},
        "none": {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
        "pick": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "uniqueItems": True},
        "any": {"anyOf": [{"type": "string", "minLength": 30}, {"type": "null"}]},
        "all": {"allOf": [{"type": "string"}, {"maxLength": 3}]},
        "const": {"const": "fixed"},
    }},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_instances_are_valid_for_their_schema(name):
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(instance_for(schema, "Lisbon"), schema)


@pytest.mark.parametrize("choice", [ToolChoice(mode="required"), ToolChoice(function="forecast")])
async def test_a_forced_tool_gets_a_call_with_schema_valid_arguments(choice):
    schema = SCHEMAS["pydantic"]
    turn = Turn(agent="main", input=[user("Lisbon")], tool_choice=choice,
                tools=[ToolSpec(name="forecast", parameters=schema), ToolSpec(name="other")] if choice.function else
                [ToolSpec(name="forecast", parameters=schema)])
    out = await events(turn)
    start, *deltas, done = [ev for ev in out if isinstance(ev, ToolCallStart | ToolCallDelta | ToolCallDone)]
    assert isinstance(start, ToolCallStart) and start.name == "forecast" and start.index == 0
    assert isinstance(done, ToolCallDone) and done.call_id == start.call_id
    assert "".join(d.arguments for d in deltas) == done.arguments
    args = json.loads(done.arguments)
    jsonschema.validate(args, schema)
    assert args["place"]["city"] == "Lisbon"
    assert out[-1] == Finished(reason="tool_calls")
    assert not any(isinstance(ev, TextDelta) for ev in out)


async def test_required_with_several_tools_calls_each_unless_parallel_is_off():
    tools = [ToolSpec(name=n, parameters=SCHEMAS["strict"]) for n in ("a", "b")]
    turn = Turn(agent="main", input=[user("go")], tools=tools, tool_choice=ToolChoice(mode="required"))
    assert [ev.name for ev in await events(turn) if isinstance(ev, ToolCallDone)] == ["a", "b"]
    turn.limits.parallel_tool_calls = False
    assert [ev.name for ev in await events(turn) if isinstance(ev, ToolCallDone)] == ["a"]


async def test_auto_tool_choice_answers_with_text():
    turn = Turn(agent="main", input=[user("just talk")], tools=[ToolSpec(name="t")])
    out = await events(turn)
    assert not any(isinstance(ev, ToolCallStart) for ev in out)
    assert out[-1] == Finished(reason="stop")


def test_unknown_echo_option_names_the_table(make_app):
    with pytest.raises(ConfigError) as info:
        make_app({"providers": {"e": {"kind": "echo", "delay": 1}}})
    assert "[providers.e] unknown key 'delay'; valid keys: accepts_images, call_tool, delay_seconds, " \
           "fail_after_words, mode, reasoning" in str(info.value)


def test_the_echo_plugin_registers_only_a_provider(make_app):
    kernel = make_app().extensions["kernel"]
    record = kernel.plugins["echo"]
    assert (record.hooks, record.providers, record.routes) == (["register_providers"], ["echo"], [])
    assert kernel.provider_kinds["echo"].settings_model is EchoOptions
