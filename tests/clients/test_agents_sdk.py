"""The OpenAI Agents SDK (``openai-agents``) against the gateway's /v1/responses."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI

from .conftest import get_weather, save_fixture

CLIENT = f"openai-agents {version('openai-agents')}"


@pytest.fixture(autouse=True)
def no_tracing():
    set_tracing_disabled(True)  # the SDK's tracing would post to api.openai.com


def model(gateway, name: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=gateway.v1, api_key=gateway.token, max_retries=0)
    return OpenAIResponsesModel(model=name, openai_client=client)


def test_text_turn(gateway):
    agent = Agent(name="echo", instructions="Repeat the user.", model=model(gateway, "words"))
    result = Runner.run_sync(agent, "hello from the agents sdk")
    assert result.final_output == "hello from the agents sdk"
    [body] = gateway.recorder.take("/v1/responses")
    assert body["model"] == "words" and body["instructions"] == "Repeat the user."
    save_fixture("agents_sdk_text", CLIENT, [body])


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_tool_round_trip(gateway, streamed):
    calls: list[str] = []

    @function_tool(name_override="get_weather")
    def get_weather_tool(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return get_weather(city)

    agent = Agent(name="weather", instructions="Use the tool.", model=model(gateway, "tooler"),
                  tools=[get_weather_tool])
    if streamed:
        import asyncio

        async def main():
            run = Runner.run_streamed(agent, "Paris")
            async for _ in run.stream_events():
                pass
            return run

        result = asyncio.run(main())
    else:
        result = Runner.run_sync(agent, "Paris")
    assert calls == ["Paris"]
    assert result.final_output == "It is sunny in Paris."
    kinds = [type(i) for i in result.new_items]
    assert ToolCallItem in kinds and ToolCallOutputItem in kinds
    first, second = gateway.recorder.take("/v1/responses")
    assert first["tools"][0]["name"] == "get_weather"
    assert [i.get("type") for i in second["input"]][-2:] == ["function_call", "function_call_output"]
    save_fixture(f"agents_sdk_tools{'_streamed' if streamed else ''}", CLIENT, [first, second])
