"""The official openai SDK against a real Hypercorn server."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage
from pydantic import BaseModel

WEATHER = {"type": "function", "name": "get_weather", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


class City(BaseModel):
    city: str


def test_create(server):
    response = server.sdk.responses.create(model="words", input="hello big world")
    assert response.output_text == "hello big world"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert isinstance(response.output[0], ResponseOutputMessage)
    assert response.usage is not None and response.usage.output_tokens == 3


def test_stream_and_get_final_response(server):
    with server.sdk.responses.stream(model="thinker", input="one two three") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.reasoning.delta" in types  # the spec's reasoning events pass through the SDK
    snapshots = [e.snapshot for e in events if e.type == "response.output_text.delta"]
    assert snapshots == ["one ", "one two ", "one two three"]
    assert final.output_text == "one two three"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_stream_with_text_format_parses_json(server):
    with server.sdk.responses.stream(model="words", input='{"city": "Rome"}', text_format=City) as stream:
        done = [e for e in stream if e.type == "response.output_text.done"]
        final = stream.get_final_response()
    assert done[0].parsed == City(city="Rome")
    assert final.output_parsed == City(city="Rome")


def test_tool_round_trip(server):
    first = server.sdk.responses.create(model="words", input="Rome", tools=[WEATHER], tool_choice="required")
    [call] = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Rome"}
    second = server.sdk.responses.create(model="words", tools=[WEATHER], input=[
        {"role": "user", "content": "Rome"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])
    assert second.output_text == "sunny" and second.status == "completed"

    with server.sdk.responses.stream(model="words", input="Oslo", tools=[WEATHER], tool_choice="required") as s:
        final = s.get_final_response()
    [streamed_call] = final.output
    assert streamed_call.type == "function_call" and json.loads(streamed_call.arguments) == {"city": "Oslo"}
    # strict tools are parsed by the SDK from the final response
    assert streamed_call.parsed_arguments == {"city": "Oslo"}


def test_what_sdk_users_see_for_an_incomplete_response(server):
    words = " ".join(f"w{i}" for i in range(20))
    response = server.sdk.responses.create(model="words", input=words, max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    with server.sdk.responses.stream(model="words", input=words, max_output_tokens=16) as stream:
        events = list(stream)
        # Current SDK releases only accept response.completed here (documented in docs/openresponses.md).
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_failures_raise_sdk_errors(server):
    with pytest.raises(openai.InternalServerError) as info:
        server.sdk.responses.create(model="broken", input="hi")
    assert info.value.status_code == 500
    with pytest.raises(openai.APIError, match="failed after 2 words"):
        with server.sdk.responses.stream(model="flaky", input="one two three") as stream:
            list(stream)
    with pytest.raises(openai.NotFoundError):
        server.sdk.responses.create(model="agent:nope", input="hi")
    with pytest.raises(openai.BadRequestError) as bad:
        server.sdk.responses.create(model="words", input="hi", temperature=5)
    assert bad.value.body["param"] == "temperature"
