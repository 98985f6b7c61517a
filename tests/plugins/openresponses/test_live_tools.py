"""Tools on a real server: calls as output items, follow-ups, parallel calls, tool_choice enforcement."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from testsupport.spec import assert_valid

from kernel import Finished, ProviderKind, RunEvent, TextDelta, ToolCallDone, ToolCallStart, Turn, hookimpl
from kernel.testing import AUTH_HEADERS

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
NEWS = {"type": "function", "name": "get_news", "parameters": {"type": "object", "properties": {}}}


def _flat(tool: dict) -> dict:
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def test_forced_call_is_an_output_item_then_the_follow_up_continues(server):
    first = server.create({"model": "words", "input": "Rome", "tools": [WEATHER], "tool_choice": "required"})
    assert first["status"] == "completed"
    [call] = first["output"]
    assert call["type"] == "function_call" and call["id"].startswith("fc_") and call["status"] == "completed"
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Rome"}
    assert call["call_id"]

    follow = server.create({"model": "main", "tools": [WEATHER], "input": [
        {"role": "user", "content": "Rome"},
        call,  # the output item, sent back verbatim
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 24C"},
    ]})
    assert follow["output"][0]["type"] == "message"
    text = follow["output"][0]["content"][0]["text"]
    assert text.endswith(f"tool_result [{call['call_id']}]: sunny, 24C")
    assert f"tool_call get_weather({call['arguments']}) [{call['call_id']}]" in text


def test_streamed_tool_call_events(server):
    stream = server.stream({"model": "words", "input": "Oslo", "tools": [WEATHER],
                            "tool_choice": {"type": "function", "name": "get_weather"}})
    assert stream.terminal["type"] == "response.completed"
    deltas = stream.of("response.function_call_arguments.delta")
    [done] = stream.of("response.function_call_arguments.done")
    assert "".join(d["delta"] for d in deltas) == done["arguments"] == '{"city": "Oslo"}'
    assert done["name"] == "get_weather"
    [added] = stream.of("response.output_item.added")
    assert added["item"]["arguments"] == "" and added["item"]["status"] == "in_progress"
    assert stream.terminal["response"]["tool_choice"] == {"type": "function", "name": "get_weather"}


def test_parallel_calls_and_parallel_tool_calls_false(server):
    both = server.create({"model": "words", "input": "x", "tools": [WEATHER, TIME], "tool_choice": "required"})
    assert [i["name"] for i in both["output"]] == ["get_weather", "get_time"]
    assert len({i["call_id"] for i in both["output"]}) == 2 and both["status"] == "completed"
    stream = server.stream({"model": "words", "input": "x", "tools": [WEATHER, TIME], "tool_choice": "required"})
    assert [e["output_index"] for e in stream.of("response.output_item.done")] == [0, 1]
    one = server.create({"model": "words", "input": "x", "tools": [WEATHER, TIME], "tool_choice": "required",
                         "parallel_tool_calls": False})
    assert [i["name"] for i in one["output"]] == ["get_weather"]
    capped = server.create({"model": "words", "input": "x", "tools": [WEATHER, TIME, NEWS],
                            "tool_choice": "required", "max_tool_calls": 2})
    assert len(capped["output"]) == 2


def test_allowed_tools_limits_the_forced_calls(server):
    body = server.create({"model": "words", "input": "x", "tools": [WEATHER, TIME, NEWS], "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}})
    assert [i["name"] for i in body["output"]] == ["get_time"]
    assert body["tool_choice"] == {"type": "allowed_tools", "mode": "required",
                                   "tools": [{"type": "function", "name": "get_time"}]}
    none = server.create({"model": "words", "input": "plain", "tools": [WEATHER], "tool_choice": "none"})
    assert [i["type"] for i in none["output"]] == ["message"]


def test_nested_tools_are_accepted_and_echoed_flat(server):
    nested = {"type": "function", "function": {"name": "get_time", "description": "Now",
                                               "parameters": {"type": "object", "properties": {}}}}
    body = server.create({"model": "words", "input": "x", "tools": [nested, WEATHER],
                          "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    assert body["tools"] == [
        {"type": "function", "name": "get_time", "description": "Now",
         "parameters": {"type": "object", "properties": {}}, "strict": None},
        _flat(WEATHER),
    ]
    assert [i["name"] for i in body["output"]] == ["get_time"]


def test_tool_choice_mistakes_are_400s_naming_the_field(server):
    cases = [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "tools": [{"type": "function",
                                                                               "name": "x"}]}},
         "tool_choice.tools[0].name"),
        ({"tools": [WEATHER, {**WEATHER}]}, "tools[1].name"),
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"tools": [{"type": "bogus_tool"}]}, "tools[0].type"),  # hosted types are omitted (see test_codex_tools)
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
    ]
    for extra, param in cases:
        resp = server.post({"model": "words", "input": "x", **extra})
        assert resp.status_code == 400, (extra, resp.text)
        assert resp.json()["error"]["param"] == param, (extra, resp.json())


class _RoguePlugin:
    """A provider that calls every tool it knows of, whatever it was offered."""

    @hookimpl
    def register_providers(self) -> list[ProviderKind]:
        return [ProviderKind(kind="rogue", factory=lambda name, options, kernel: _Rogue())]


class _Rogue:
    name = "rogue"
    accepts_images = False

    async def aclose(self) -> None:
        return None

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        yield TextDelta("calling")
        for index, name in enumerate(["get_weather", "get_time", "get_news"]):
            yield ToolCallStart(index=index, call_id=f"call_{index}", name=name)
            yield ToolCallDone(index=index, call_id=f"call_{index}", name=name, arguments="{}")
        yield Finished(reason="tool_calls")


async def test_calls_outside_allowed_tools_are_suppressed(make_app, sse):
    app = make_app({"plugins": {"openresponses": {"enabled": True}}, "providers": {"r": {"kind": "rogue"}},
                    "agents": {"main": {"provider": "r"}}}, extra_plugins={"rogue": _RoguePlugin()})
    body = {"input": "x", "tools": [WEATHER, TIME, NEWS], "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}}
    async with app.test_app() as test_app:
        client = test_app.test_client()
        resp = await client.post("/v1/responses", json=body, headers=AUTH_HEADERS)
        data = await resp.get_json()
        assert_valid("ResponseResource", data)
        assert [(i["type"], i.get("name")) for i in data["output"]] == [
            ("message", None), ("function_call", "get_time")]
        resp = await client.post("/v1/responses", json={**body, "stream": True}, headers=AUTH_HEADERS)
        events = sse.parse(await resp.get_data())
        sse.check(events)
        assert [e["item"].get("name") for e in events if e["type"] == "response.output_item.done"] == [
            None, "get_time"]
        # tool_choice none: no call at all reaches the client, the run still completes.
        resp = await client.post("/v1/responses", json={**body, "tool_choice": "none"}, headers=AUTH_HEADERS)
        data = await resp.get_json()
        assert [i["type"] for i in data["output"]] == ["message"] and data["status"] == "completed"


async def test_named_choice_and_call_caps_are_hard_limits(make_app):
    # The rogue provider ignores what it was offered; the client still gets only what it allowed.
    app = make_app({"plugins": {"openresponses": {"enabled": True}}, "providers": {"r": {"kind": "rogue"}},
                    "agents": {"main": {"provider": "r"}}}, extra_plugins={"rogue": _RoguePlugin()})
    base = {"input": "x", "tools": [WEATHER, TIME, NEWS], "store": False}
    cases = [
        ({"tool_choice": {"type": "function", "name": "get_news"}}, ["get_news"]),
        ({"max_tool_calls": 2}, ["get_weather", "get_time"]),
        ({"parallel_tool_calls": False}, ["get_weather"]),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [
            {"type": "function", "name": "get_time"}, {"type": "function", "name": "get_news"}]},
          "max_tool_calls": 1}, ["get_time"]),
    ]
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for extra, names in cases:
            resp = await client.post("/v1/responses", json={**base, **extra}, headers=AUTH_HEADERS)
            data = await resp.get_json()
            assert_valid("ResponseResource", data)
            calls = [i for i in data["output"] if i["type"] == "function_call"]
            assert [c["name"] for c in calls] == names, extra
            assert data["status"] == "completed" and all(c["status"] == "completed" for c in calls)
