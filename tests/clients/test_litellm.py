"""LiteLLM's SDK against the gateway: ``litellm.completion`` (Chat Completions, its
default) and ``litellm.responses`` (/v1/responses), with the ``openai/`` provider
prefix and the gateway as ``api_base``. The conftest keeps LiteLLM offline
(no telemetry, the bundled model cost map)."""

from __future__ import annotations

import json
from importlib.metadata import version

import litellm
import pytest

from .conftest import get_weather, save_fixture

# LiteLLM's own types trip pydantic warnings (ReadOnly TypedDict items, its usage
# conversion); they say nothing about the gateway.
pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")]

CLIENT = f"litellm {version('litellm')}"
TOOL_CHAT = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_RESPONSES = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                  "parameters": TOOL_CHAT["function"]["parameters"]}


@pytest.fixture(autouse=True)
def offline():
    litellm.telemetry = False
    litellm.disable_streaming_logging = True


def connection(gateway, name: str) -> dict:
    return {"model": f"openai/{name}", "api_base": gateway.v1, "api_key": gateway.token, "max_retries": 0}


def test_model_cost_map_is_the_bundled_one():
    # LITELLM_LOCAL_MODEL_COST_MAP=True: nothing was fetched, yet the map is there.
    assert "gpt-4o" in litellm.model_cost


def test_completion_text_turn(gateway):
    reply = litellm.completion(**connection(gateway, "words"), messages=[{"role": "user", "content": "hi litellm"}])
    assert reply.choices[0].message.content == "hi litellm"
    assert reply.usage.completion_tokens == 2
    gateway.recorder.take("/v1/chat/completions")


def test_completion_streamed_text_turn(gateway):
    chunks = litellm.completion(**connection(gateway, "words"), stream=True,
                                messages=[{"role": "user", "content": "streamed litellm words"}])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "streamed litellm words"
    gateway.recorder.take("/v1/chat/completions")


def test_completion_tool_round_trip(gateway):
    messages: list = [{"role": "user", "content": "Paris"}]
    first = litellm.completion(**connection(gateway, "tooler"), messages=messages, tools=[TOOL_CHAT])
    message = first.choices[0].message
    [call] = message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)}]
    final = litellm.completion(**connection(gateway, "tooler"), messages=messages, tools=[TOOL_CHAT])
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert len(gateway.recorder.take("/v1/chat/completions")) == 2


def test_responses_text_turn(gateway):
    reply = litellm.responses(**connection(gateway, "words"), input="hi litellm responses")
    assert reply.output[0].content[0].text == "hi litellm responses"
    [body] = gateway.recorder.take("/v1/responses")
    save_fixture("litellm_text", CLIENT, [body])


def test_responses_streamed_text_turn(gateway):
    # For a model it has no entry for, LiteLLM fetches the whole response and replays it as
    # stream events itself (its recorded body has no "stream"); the events must still parse.
    events = list(litellm.responses(**connection(gateway, "words"), input="streamed via litellm", stream=True))
    deltas = "".join(e.delta for e in events if getattr(e, "type", "") == "response.output_text.delta")
    assert deltas == "streamed via litellm"
    assert events[-1].type == "response.completed"
    [body] = gateway.recorder.take("/v1/responses")
    save_fixture("litellm_text_streamed", CLIENT, [body])


def test_responses_tool_round_trip(gateway):
    first = litellm.responses(**connection(gateway, "tooler"), input="Paris", tools=[TOOL_RESPONSES])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    follow = [
        {"role": "user", "content": "Paris"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": get_weather(**json.loads(call.arguments))},
    ]
    final = litellm.responses(**connection(gateway, "tooler"), input=follow, tools=[TOOL_RESPONSES])
    assert final.output[0].content[0].text == "It is sunny in Paris."
    bodies = gateway.recorder.take("/v1/responses")
    assert len(bodies) == 2
    save_fixture("litellm_tools", CLIENT, bodies)
