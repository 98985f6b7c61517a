"""The official ``openai`` SDK's Responses calls, recorded as replay fixtures too
(the SDK's own behaviour against the server is covered in tests/plugins/openresponses)."""

from __future__ import annotations

import json
from importlib.metadata import version

from openai import OpenAI

from .conftest import get_weather, save_fixture

CLIENT = f"openai {version('openai')}"
TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}


def sdk(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.v1, api_key=gateway.token, max_retries=0)


def test_text_turn_streamed(gateway):
    with sdk(gateway).responses.stream(model="words", input="hello from the sdk", instructions="Repeat.",
                                       max_output_tokens=64, temperature=0.2) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "hello from the sdk"
    save_fixture("openai_sdk_text_streamed", CLIENT, gateway.recorder.take("/v1/responses"))


def test_tool_round_trip_with_previous_input(gateway):
    client = sdk(gateway)
    history: list = [{"role": "user", "content": "Paris"}]
    first = client.responses.create(model="tooler", input=history, tools=[TOOL], tool_choice="auto",
                                    parallel_tool_calls=False, store=False)
    [call] = [i for i in first.output if i.type == "function_call"]
    history += [call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id,
                 "output": get_weather(**json.loads(call.arguments))}]
    final = client.responses.create(model="tooler", input=history, tools=[TOOL], store=False)
    assert final.output_text == "It is sunny in Paris."
    save_fixture("openai_sdk_tools", CLIENT, gateway.recorder.take("/v1/responses"))
