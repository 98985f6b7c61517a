"""The OpenAI Agents SDK's ``OpenAIConversationsSession`` against a real server.

The session keeps the dialogue in ``/v1/conversations`` (client-managed: it reads the
items before a turn and adds the turn's items after), so the second turn's model sees
the first; the echo agent ``main`` answers with everything it was shown.
"""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from agents.memory import OpenAIConversationsSession
from openai import AsyncOpenAI

from kernel.testing import TEST_TOKEN


@pytest.fixture(autouse=True)
def no_tracing():
    set_tracing_disabled(True)  # the SDK's tracing would post to api.openai.com


def test_two_turns_through_an_openai_conversations_session(stored):
    async def main() -> tuple[str, str, list[dict], str]:
        client = AsyncOpenAI(base_url=f"{stored.base}/v1", api_key=TEST_TOKEN, max_retries=0)
        agent = Agent(name="echo", model=OpenAIResponsesModel(model="main", openai_client=client))
        session = OpenAIConversationsSession(openai_client=client)
        first = await Runner.run(agent, "my name is Ada", session=session)
        second = await Runner.run(agent, "what is my name?", session=session)
        items = await session.get_items()
        await client.close()
        return first.final_output, second.final_output, items, session.session_id

    first, second, items, conversation_id = asyncio.run(main())
    assert first == "user: my name is Ada"
    assert second == "user: my name is Ada\nassistant: user: my name is Ada\nuser: what is my name?"
    assert [item.get("role") for item in items] == ["user", "assistant", "user", "assistant"]
    # The session is an ordinary conversation of this key.
    assert stored.sdk.conversations.retrieve(conversation_id).id == conversation_id


def test_two_turns_with_a_server_managed_conversation(stored):
    """``Runner.run(conversation_id=...)``: the SDK sends ``conversation`` and only the new input."""
    conversation_id = stored.sdk.conversations.create().id

    async def main() -> tuple[str, str]:
        client = AsyncOpenAI(base_url=f"{stored.base}/v1", api_key=TEST_TOKEN, max_retries=0)
        agent = Agent(name="echo", model=OpenAIResponsesModel(model="main", openai_client=client))
        first = await Runner.run(agent, "my name is Ada", conversation_id=conversation_id)
        second = await Runner.run(agent, "what is my name?", conversation_id=conversation_id)
        await client.close()
        return first.final_output, second.final_output

    first, second = asyncio.run(main())
    assert first == "user: my name is Ada"
    assert second == "user: my name is Ada\nassistant: user: my name is Ada\nuser: what is my name?"
    listed = stored.sdk.conversations.items.list(conversation_id, order="asc").data
    assert [item.role for item in listed] == ["user", "assistant", "user", "assistant"]
