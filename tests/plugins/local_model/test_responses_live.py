"""The bundled model behind POST /v1/responses, driven by the official openai SDK over real
HTTP; streamed events and final bodies checked against the published OpenResponses schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from testsupport.spec import assert_valid, assert_valid_event

from kernel.testing import TEST_TOKEN

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}

ENDLESS = {"type": "json_schema", "name": "story", "strict": True, "schema": {
    "type": "object", "properties": {"story": {"type": "string", "minLength": 1500}}, "required": ["story"],
    "additionalProperties": False}}


@pytest.fixture
def client(make_app: Any, live_server: Any) -> Iterator[openai.OpenAI]:
    app = make_app({
        "plugins": {"local_model": {"enabled": True}, "openresponses": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", "n_threads": 1, "max_queue": 0, "seed": 3}},
        "agents": {"main": {"provider": "local", "instructions": "Answer briefly."}},
    })
    with live_server(app) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=60)


def test_streamed_answer_and_tool_call_and_429(client: openai.OpenAI) -> None:
    # A short streamed answer: every event valid, text deltas, a final resource with usage.
    events = list(client.responses.create(model="main", input="What is the capital of France?",
                                          max_output_tokens=40, stream=True))
    for ev in events:
        assert_valid_event(ev.model_dump(mode="json", exclude_unset=True))
    deltas = [ev.delta for ev in events if ev.type == "response.output_text.delta"]
    assert len(deltas) > 1
    final = events[-1].response
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert_valid("ResponseResource", final.model_dump(mode="json", exclude_unset=True))
    assert final.output_text == "".join(deltas) and final.output_text.strip()
    assert final.usage.input_tokens > 0 and 0 < final.usage.output_tokens <= 40

    # A forced tool call: arguments generated under the tool's schema.
    resp = client.responses.create(model="main", input="What's the weather in Oslo?", tools=[WEATHER],
                                   tool_choice={"type": "function", "name": "get_weather"})
    assert_valid("ResponseResource", resp.model_dump(mode="json", exclude_unset=True))
    (call,) = [item for item in resp.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    # max_queue = 0: while one answer streams, the next request is refused with 429.
    # (The story's schema cannot be satisfied in under ~1500 characters: still generating.)
    with client.responses.create(model="main", input="Tell me a very long story.", max_output_tokens=1000,
                                 text={"format": ENDLESS}, stream=True) as stream:
        first = next(ev for ev in stream if ev.type == "response.output_text.delta")
        assert first.delta.startswith("{")  # text.format reached the model as a grammar
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model="main", input="Hi", max_output_tokens=16)
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.code == "model_busy"
