"""LangChain's ``ChatOpenAI`` (``langchain-openai``) against the gateway.

``ChatOpenAI`` speaks Chat Completions by default and the Responses API with
``use_responses_api=True``; both are driven, each through a text turn and a tool round
trip with a ``@tool`` bound to the model (LangChain's own loop: invoke, run the tool
calls, send ``ToolMessage``\\ s, invoke again).
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from .conftest import get_weather, save_fixture

CLIENT = f"langchain-openai {version('langchain-openai')}"
APIS = {"responses": ("/v1/responses", True), "chat": ("/v1/chat/completions", False)}


@tool("get_weather")
def weather_tool(city: str) -> str:
    """The weather in a city."""
    return get_weather(city)


def chat_model(gateway, name: str, responses: bool, streaming: bool = False) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=gateway.v1, api_key=gateway.token, max_retries=0,
                      use_responses_api=responses, streaming=streaming,
                      stream_usage=True)  # chat streams carry usage only when asked (stream_options)


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_text_turn(gateway, api, streaming):
    path, responses = APIS[api]
    llm = chat_model(gateway, "words", responses, streaming)
    reply = llm.invoke([HumanMessage("hello from langchain")])
    assert reply.text == "hello from langchain"
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] == 3
    [body] = gateway.recorder.take(path)
    assert body["model"] == "words"
    if responses:
        save_fixture(f"langchain_text{'_streamed' if streaming else ''}", CLIENT, [body])


@pytest.mark.parametrize("api", list(APIS))
def test_tool_round_trip(gateway, api):
    path, responses = APIS[api]
    llm = chat_model(gateway, "tooler", responses).bind_tools([weather_tool])
    messages: list = [HumanMessage("Paris")]
    first = llm.invoke(messages)
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    messages += [first, ToolMessage(weather_tool.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(messages)
    assert final.tool_calls == []
    assert final.text == "It is sunny in Paris."
    bodies = gateway.recorder.take(path)
    assert len(bodies) == 2 and bodies[0]["tools"]
    if responses:
        save_fixture("langchain_tools", CLIENT, bodies)
