"""The seam a response store plugs into: chains, references, and a complete event log."""

from __future__ import annotations

import asyncio

from testsupport.spec import assert_valid

import plugins.openresponses.plugin as plugin
from kernel import Message, TextPart
from kernel.testing import AUTH_HEADERS
from plugins.openresponses.stored import StoredResponses


class Recording(StoredResponses):
    """Keeps everything in memory and is slow to save, like a real database can be."""

    persists = True

    def __init__(self) -> None:
        self.events: dict[str, list[dict]] = {}
        self.inputs: dict[str, tuple] = {}

    async def previous_items(self, response_id, principal):
        if response_id != "resp_prev":
            return await super().previous_items(response_id, principal)
        return [Message(role="user", parts=[TextPart("earlier question")]),
                Message(role="assistant", parts=[TextPart("earlier answer")])]

    async def find_item(self, item_id, principal):
        return Message(role="user", parts=[TextPart("stored item")]) if item_id == "msg_stored" else None

    async def track(self, builder, run, request, input_items, principal):
        await asyncio.sleep(0.05)  # the run goes on meanwhile; its events must not be lost
        builder.record_events = True
        builder.listeners.append(self.events.setdefault(builder.id, []).append)
        self.inputs[builder.id] = (request.raw_input, input_items, principal)


async def test_a_store_sees_every_event_and_serves_chains(make_app, monkeypatch, sse):
    store = Recording()
    monkeypatch.setattr(plugin, "make_stored", lambda kernel, settings: store)
    app = make_app({"plugins": {"openresponses": {"enabled": True}},
                    "providers": {"t": {"kind": "echo", "mode": "transcript"}}, "agents": {"main": {"provider": "t"}}})
    body = {"input": [{"type": "item_reference", "id": "msg_stored"}, {"role": "user", "content": "now"}],
            "previous_response_id": "resp_prev"}
    async with app.test_app() as test_app:
        client = test_app.test_client()
        resp = await client.post("/v1/responses", json=body, headers=AUTH_HEADERS)
        plain = await resp.get_json()
        assert_valid("ResponseResource", plain)
        assert plain["output"][0]["content"][0]["text"] == (
            "user: earlier question\nassistant: earlier answer\nuser: stored item\nuser: now")
        assert plain["store"] is True and plain["previous_response_id"] == "resp_prev"
        logged = store.events[plain["id"]]
        sse.check(logged)  # complete, from response.created on, although track() was slow
        assert logged[-1]["response"] == plain
        raw_input, items, principal = store.inputs[plain["id"]]
        assert raw_input == body["input"] and principal == "default"
        assert [m.text for m in items] == ["stored item", "now"]

        resp = await client.post("/v1/responses", json={**body, "stream": True}, headers=AUTH_HEADERS)
        streamed = sse.parse(await resp.get_data())
        sse.check(streamed)
        assert streamed == store.events[streamed[0]["response"]["id"]]

        missing = await client.post("/v1/responses", json={**body, "previous_response_id": "resp_x"},
                                    headers=AUTH_HEADERS)
        assert missing.status_code == 404
        assert (await missing.get_json())["error"]["code"] == "previous_response_not_found"
