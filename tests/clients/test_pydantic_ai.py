"""pydantic-ai's OpenAI models against the gateway.

``OpenAIChatModel`` (Chat Completions, pydantic-ai's default for OpenAI) and
``OpenAIResponsesModel`` (/v1/responses), each through a text turn and a tool round
trip with a ``tool_plain`` the agent runs itself.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from .conftest import get_weather, save_fixture

CLIENT = f"pydantic-ai-slim {version('pydantic-ai-slim')}"
MODELS = {"responses": (OpenAIResponsesModel, "/v1/responses"), "chat": (OpenAIChatModel, "/v1/chat/completions")}


def agent(gateway, api: str, name: str) -> Agent:
    kind, _ = MODELS[api]
    provider = OpenAIProvider(base_url=gateway.v1, api_key=gateway.token)
    return Agent(kind(name, provider=provider), instructions="Be helpful.")


@pytest.mark.parametrize("api", list(MODELS))
def test_text_turn(gateway, api):
    result = agent(gateway, api, "words").run_sync("hello from pydantic ai")
    assert result.output == "hello from pydantic ai"
    assert result.usage.output_tokens == 4
    [body] = gateway.recorder.take(MODELS[api][1])
    assert body["model"] == "words"
    if api == "responses":
        save_fixture("pydantic_ai_text", CLIENT, [body])


def test_streamed_text_turn(gateway):
    async def main() -> str:
        async with agent(gateway, "responses", "words").run_stream("streamed words here") as run:
            return await run.get_output()

    assert asyncio.run(main()) == "streamed words here"
    [body] = gateway.recorder.take("/v1/responses")
    assert body["stream"] is True
    save_fixture("pydantic_ai_text_streamed", CLIENT, [body])


@pytest.mark.parametrize("api", list(MODELS))
def test_tool_round_trip(gateway, api):
    weather = agent(gateway, api, "tooler")
    calls: list[str] = []

    @weather.tool_plain(name="get_weather")
    def weather_tool(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return get_weather(city)

    result = weather.run_sync("Paris")
    assert calls == ["Paris"]
    assert result.output == "It is sunny in Paris."
    kinds = [part.part_kind for message in result.all_messages() for part in message.parts]
    assert "tool-call" in kinds and "tool-return" in kinds
    bodies = gateway.recorder.take(MODELS[api][1])
    assert len(bodies) == 2
    if api == "responses":
        save_fixture("pydantic_ai_tools", CLIENT, bodies)
