"""The Conversations API with the official openai SDK against a real server.

Every body is parsed with the SDK's own pydantic types (``model_validate``, strict
about required fields), the echo provider in transcript mode shows what the model saw.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList
from openai.types.conversations.conversation_item import ConversationItem
from pydantic import TypeAdapter
from testsupport.spec import assert_valid

from .conftest import parse_sse
from .stored_support import OTHER_HEADERS, OTHER_SECRET, error_of

ITEM = TypeAdapter(ConversationItem)


def text_of(item) -> str:
    return "".join(part.text for part in item.content)


def test_create_retrieve_update_delete(stored):
    sdk = stored.sdk
    conv = sdk.conversations.create(metadata={"topic": "demo"}, items=[
        {"type": "message", "role": "user", "content": "hello"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi there"}]},
    ])
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "demo"}
    raw = stored.http.get(f"/v1/conversations/{conv.id}").json()
    assert Conversation.model_validate(raw) == conv
    assert sdk.conversations.retrieve(conv.id) == conv
    updated = sdk.conversations.update(conv.id, metadata={"topic": "changed", "k": "v"})
    assert updated.metadata == {"topic": "changed", "k": "v"} and updated.created_at == conv.created_at
    items = sdk.conversations.items.list(conv.id, order="asc")
    assert [i.role for i in items.data] == ["user", "assistant"]
    assert [text_of(i) for i in items.data] == ["hello", "hi there"]
    deleted = sdk.conversations.delete(conv.id)
    assert deleted.deleted and deleted.id == conv.id
    ConversationDeletedResource.model_validate(deleted.model_dump())
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.list(conv.id)


def test_items_create_list_retrieve_delete_and_pagination(stored):
    sdk = stored.sdk
    conv = sdk.conversations.create()
    added = sdk.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "user", "content": f"m{i}"} for i in range(7)])
    assert len(added.data) == 7 and not added.has_more
    # Pages of 3, oldest first, following the SDK's cursor (after=last_id).
    page = sdk.conversations.items.list(conv.id, order="asc", limit=3)
    seen = []
    while True:
        raw = stored.http.get(f"/v1/conversations/{conv.id}/items",
                              params={"order": "asc", "limit": 3, **({"after": seen[-1]} if seen else {})}).json()
        ConversationItemList.model_validate(raw)
        seen += [item["id"] for item in raw["data"]]
        if not raw["has_more"]:
            break
    assert seen == [item.id for item in added.data]
    assert [text_of(i) for i in page] == [f"m{i}" for i in range(7)]
    newest = sdk.conversations.items.list(conv.id, limit=2)  # default order: desc
    assert [text_of(i) for i in newest.data] == ["m6", "m5"] and newest.has_more
    after = sdk.conversations.items.list(conv.id, limit=2, after=newest.last_id)
    assert [text_of(i) for i in after.data] == ["m4", "m3"]
    one = sdk.conversations.items.retrieve(added.data[2].id, conversation_id=conv.id)
    assert text_of(one) == "m2" and one.status == "completed"
    ITEM.validate_python(stored.http.get(f"/v1/conversations/{conv.id}/items/{one.id}").json())
    after_delete = sdk.conversations.items.delete(one.id, conversation_id=conv.id)
    assert isinstance(after_delete, Conversation) and after_delete.id == conv.id
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(one.id, conversation_id=conv.id)
    assert [text_of(i) for i in sdk.conversations.items.list(conv.id, order="asc").data] == [
        "m0", "m1", "m3", "m4", "m5", "m6"]
    # A cursor naming no item of the conversation is refused, naming the parameter.
    bad = stored.http.get(f"/v1/conversations/{conv.id}/items", params={"after": "msg_nope"})
    assert error_of(bad, 400)["param"] == "after"


def test_limits_are_openai_s(stored):
    http = stored.http
    too_many = {f"k{i}": "v" for i in range(17)}
    assert error_of(http.post("/v1/conversations", json={"metadata": too_many}), 400)["param"] == "metadata"
    long_key = "k" * 65
    assert error_of(http.post("/v1/conversations", json={"metadata": {long_key: "v"}}), 400)["param"] == (
        f"metadata.{long_key}")
    assert error_of(http.post("/v1/conversations", json={"metadata": {"a": "v" * 513}}), 400)["param"] == "metadata.a"
    assert error_of(http.post("/v1/conversations", json={"metadata": {"a": 1}}), 400)["param"] == "metadata.a"
    items = [{"role": "user", "content": "x"}] * 21
    assert error_of(http.post("/v1/conversations", json={"items": items}), 400)["param"] == "items"
    bad_item = http.post("/v1/conversations", json={"items": [{"role": "user", "content": "ok"},
                                                              {"type": "message", "role": "wizard", "content": "x"}]})
    assert error_of(bad_item, 400)["param"].startswith("items[1]")
    conv = stored.sdk.conversations.create()
    assert error_of(http.get(f"/v1/conversations/{conv.id}/items", params={"limit": 101}), 400)["param"] == "limit"
    assert error_of(http.get(f"/v1/conversations/{conv.id}/items", params={"order": "up"}), 400)["param"] == "order"
    assert error_of(http.post(f"/v1/conversations/{conv.id}", json={}), 400)["param"] == "metadata"
    assert error_of(http.post(f"/v1/conversations/{conv.id}/items", json={}), 400)["param"] == "items"


def test_three_turns_the_model_sees_the_conversation(stored):
    sdk = stored.sdk
    conv = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "my name is Ada"}])
    first = sdk.responses.create(model="main", conversation=conv.id, input="who am I?")
    assert first.conversation is not None and first.conversation.id == conv.id
    assert first.output_text == "user: my name is Ada\nuser: who am I?"
    # "words" echoes the newest user text: short answers keep the transcript readable.
    second = sdk.responses.create(model="words", conversation={"id": conv.id}, input="again")
    assert second.output_text == "again" and second.conversation.id == conv.id
    with sdk.responses.stream(model="main", conversation=conv.id, input="third") as stream:
        third = stream.get_final_response()
    assert third.output_text == (f"user: my name is Ada\nuser: who am I?\nassistant: {first.output_text}\n"
                                 "user: again\nassistant: again\nuser: third")
    items = list(sdk.conversations.items.list(conv.id, order="asc"))
    assert [i.role for i in items] == ["user", "user", "assistant", "user", "assistant", "user", "assistant"]
    # The conversation keeps the response's own output items, same ids: stored once, named once.
    assert items[2].id == first.output[0].id and items[4].id == second.output[0].id
    assert items[6].id == third.output[0].id
    raw = stored.http.get(f"/v1/responses/{first.id}").json()
    assert raw["conversation"] == {"id": conv.id}
    assert_valid("ResponseResource", raw)


def test_streaming_events_carry_the_conversation_and_validate(stored, sse):
    conv = stored.sdk.conversations.create()
    with stored.http.stream("POST", "/v1/responses", json={"model": "words", "conversation": conv.id,
                                                           "input": "one two", "stream": True}) as resp:
        events = parse_sse(resp.read())
    sse.check(events)
    final = events[-1]["response"]
    assert final["conversation"] == {"id": conv.id}
    [listed_user, listed_reply] = stored.sdk.conversations.items.list(conv.id, order="asc").data
    assert text_of(listed_user) == "one two" and listed_reply.id == final["output"][0]["id"]


def test_background_turn_appends_when_it_ends(stored):
    sdk = stored.sdk
    conv = sdk.conversations.create()
    queued = sdk.responses.create(model="words", conversation=conv.id, input="in the background", background=True)
    assert queued.conversation.id == conv.id
    import time

    deadline = time.monotonic() + 10
    while sdk.responses.retrieve(queued.id).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    items = sdk.conversations.items.list(conv.id, order="asc").data
    assert [text_of(i) for i in items] == ["in the background", "in the background"]


def test_conversation_with_previous_response_id_is_a_400(stored):
    conv = stored.sdk.conversations.create()
    first = stored.sdk.responses.create(model="words", input="x")
    resp = stored.http.post("/v1/responses", json={"input": "y", "conversation": conv.id,
                                                   "previous_response_id": first.id})
    assert error_of(resp, 400)["param"] == "conversation"
    missing = stored.http.post("/v1/responses", json={"input": "y", "conversation": "conv_missing"})
    error = error_of(missing, 404)
    assert error["param"] == "conversation" and error["code"] == "conversation_not_found"
    bad = stored.http.post("/v1/responses", json={"input": "y", "conversation": {"id": 5}})
    assert error_of(bad, 400)["param"] == "conversation.id"


def test_other_keys_get_404_everywhere(stored):
    conv = stored.sdk.conversations.create(items=[{"role": "user", "content": "secret"}])
    item_id = stored.sdk.conversations.items.list(conv.id).data[0].id
    other_sdk = openai.OpenAI(base_url=f"{stored.base}/v1", api_key=OTHER_SECRET, max_retries=0)
    with httpx.Client(base_url=stored.base, headers=OTHER_HEADERS, timeout=30) as other:
        for method, path, body in (
            ("GET", "", None), ("POST", "", {"metadata": {}}), ("DELETE", "", None), ("GET", "/items", None),
            ("POST", "/items", {"items": [{"role": "user", "content": "x"}]}),
            ("GET", f"/items/{item_id}", None), ("DELETE", f"/items/{item_id}", None),
        ):
            resp = other.request(method, f"/v1/conversations/{conv.id}{path}", json=body)
            assert error_of(resp, 404)["code"] == "conversation_not_found", (method, path)
        turn = other.post("/v1/responses", json={"input": "x", "conversation": conv.id})
        assert error_of(turn, 404)["param"] == "conversation"
    # The other key's own conversation is just as invisible to the main token.
    theirs = other_sdk.conversations.create()
    with pytest.raises(openai.NotFoundError):
        stored.sdk.conversations.retrieve(theirs.id)
    other_sdk.close()
    # Nothing was added or deleted.
    assert [text_of(i) for i in stored.sdk.conversations.items.list(conv.id).data] == ["secret"]


def test_a_session_key_is_a_conversation_addressed_by_name(stored):
    key = "support-ticket-42"
    stored.create({"model": "words", "input": "first"}, headers={"x-session-key": key})
    conv = stored.sdk.conversations.retrieve(key)
    assert conv.id == key and conv.metadata == {}
    assert [text_of(i) for i in stored.sdk.conversations.items.list(key, order="asc").data] == ["first", "first"]
    answer = stored.sdk.responses.create(model="main", conversation=key, input="second")
    assert answer.output_text == "user: first\nassistant: first\nuser: second"
    assert stored.sdk.conversations.update(key, metadata={"a": "b"}).metadata == {"a": "b"}
    # ... and a conversation id works as a session key.
    conv = stored.sdk.conversations.create(items=[{"role": "user", "content": "by id"}])
    body = stored.create({"model": "main", "input": "by key"}, headers={"x-session-key": conv.id})
    assert body["output"][0]["content"][0]["text"] == "user: by id\nuser: by key"
    both = stored.http.post("/v1/responses", json={"input": "x", "conversation": conv.id},
                            headers={"x-session-key": conv.id})
    assert error_of(both, 400)["param"] == "conversation"


def test_items_added_with_media_and_system_notes_list_in_sdk_shapes(stored):
    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
           "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
    conv = stored.sdk.conversations.create(items=[
        {"type": "message", "role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"},
                                                        {"type": "input_image", "image_url": png}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ])
    raw = stored.http.get(f"/v1/conversations/{conv.id}/items", params={"order": "asc"}).json()
    page = ConversationItemList.model_validate(raw)
    kinds = [item.type for item in page.data]
    assert kinds == ["message", "message", "function_call", "function_call_output"]
    assert page.data[0].role == "system" and page.data[1].content[1].type == "input_image"
    assert page.data[3].output == "42" and page.first_id == page.data[0].id and page.last_id == page.data[3].id



def test_a_tool_call_and_its_output_continue_in_the_conversation(stored):
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    conv = stored.sdk.conversations.create()
    first = stored.sdk.responses.create(model="words", conversation=conv.id, input="Rome", tools=[tool],
                                        tool_choice="required")
    [call] = first.output
    assert call.type == "function_call"
    # Only the output is sent: the call it answers is in the conversation.
    second = stored.sdk.responses.create(model="main", conversation=conv.id, tools=[tool], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text.endswith(f"tool_result [{call.call_id}]: sunny")
    listed = stored.sdk.conversations.items.list(conv.id, order="asc").data
    assert [item.type for item in listed] == ["message", "function_call", "function_call_output", "message"]
    assert listed[1].id == call.id and listed[1].call_id == call.call_id
