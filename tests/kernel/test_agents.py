"""Routing a request to an agent: the model field, headers, the default, and unknown agents."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers

from kernel import ApiError, Message, TextPart, Turn
from kernel.agents import AGENT_HEADERS, MODEL_PREFIXES, Agent, AgentTable
from kernel.testing import AUTH_HEADERS

TABLE = AgentTable(
    {name: Agent(name=name, provider="echo") for name in ("main", "research", "ops")}, default="main"
)


@pytest.mark.parametrize("prefix", MODEL_PREFIXES)
def test_model_prefixes_route_to_the_agent(prefix):
    assert TABLE.resolve(f"{prefix}research", {}).name == "research"


def test_the_issue_lists_the_prefixes_and_headers():
    assert set(MODEL_PREFIXES) >= {"agent:", "clawdbot:", "moltbot:", "openclaw:"}
    assert set(AGENT_HEADERS) >= {"x-agent-id", "x-clawdbot-agent-id", "x-moltbot-agent-id"}


def test_a_bare_agent_name_routes_to_it():
    assert TABLE.resolve("ops", {}).name == "ops"


@pytest.mark.parametrize("model", [None, "", "gpt-4o-mini", "Research", "agent"])
def test_anything_else_goes_to_the_default_agent(model):
    assert TABLE.resolve(model, {}).name == "main"


@pytest.mark.parametrize("header", AGENT_HEADERS)
def test_agent_headers_route_and_are_case_insensitive(header):
    assert TABLE.resolve(None, Headers({header: "ops"})).name == "ops"
    assert TABLE.resolve(None, Headers({header.upper(): " research "})).name == "research"


def test_the_agent_header_wins_over_the_model_field():
    assert TABLE.resolve("agent:research", Headers({"x-agent-id": "ops"})).name == "ops"


@pytest.mark.parametrize(("model", "headers"), [
    ("agent:nobody", {}),
    ("clawdbot:nobody", {}),
    (None, {"x-agent-id": "nobody"}),
    ("main", {"x-moltbot-agent-id": "nobody"}),
])
def test_an_unknown_agent_is_a_404_listing_the_known_agents(model, headers):
    with pytest.raises(ApiError) as info:
        TABLE.resolve(model, Headers(headers))
    err = info.value
    assert err.status == 404
    assert err.message == "agent 'nobody' does not exist; known agents: main, ops, research"
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert err.body()["error"]["type"] == "not_found_error"


async def test_routing_over_http_through_a_plugin_route(make_app, running):
    app = make_app({
        "plugins": {"example": {"enabled": True}},
        "providers": {"shout": {"kind": "reverse", "upper": True}},
        "agents": {"mirror": {"provider": "shout"}},
    })
    async with running(app) as (_, client):
        default = await client.get("/example/hello?name=x", headers=AUTH_HEADERS)
        assert (await default.get_json())["agent"] == "main"
        for header in ("x-agent-id", "x-clawdbot-agent-id", "x-moltbot-agent-id"):
            routed = await client.get("/example/hello?name=x", headers={**AUTH_HEADERS, header: "mirror"})
            body = await routed.get_json()
            assert (body["agent"], body["text"]) == ("mirror", "X OLLEH")
        missing = await client.get("/example/hello", headers={**AUTH_HEADERS, "x-agent-id": "ghost"})
        assert missing.status_code == 404
        assert (await missing.get_json())["error"]["message"] == (
            "agent 'ghost' does not exist; known agents: main, mirror")


async def test_the_model_field_routes_through_a_plugin_setting(make_app, running):
    # The example plugin resolves its `agent` setting like a request's model field.
    app = make_app({
        "plugins": {"example": {"enabled": True, "agent": "openclaw:mirror"}},
        "agents": {"mirror": {"provider": "reverse"}},
    })
    async with running(app) as (_, client):
        body = await (await client.get("/example/hello?name=ab", headers=AUTH_HEADERS)).get_json()
        assert (body["agent"], body["text"]) == ("mirror", "ba olleh")


async def test_an_agents_instructions_and_options_shape_the_turn(make_app, running):
    app = make_app({
        "providers": {"seer": {"kind": "echo", "mode": "transcript"}},
        "agents": {
            "seer": {"provider": "seer", "instructions": "Be terse.", "model": "m-1"},
            "short": {"provider": "echo", "options": {"max_output_tokens": 2}},
            "tuned": {"provider": "echo", "options": {"temperature": 0.3, "presence_penalty": 0.5,
                                                      "reasoning_effort": "low"}},
        },
    })
    async with running(app) as (kernel, _):
        turn = Turn(agent="seer", input=[Message("user", [TextPart("hi there")])], system="Answer in French.")
        result = await kernel.runs.start(turn).wait()
        assert result.text == "system: Be terse.\n\nAnswer in French.\nuser: hi there"
        assert turn.model == "m-1"
        short = await kernel.runs.start(Turn(agent="short", input=[Message("user", [TextPart("a b c d")])])).wait()
        assert (short.text, short.finish_reason, short.status) == ("a b ", "length", "incomplete")
        # A request's own limit wins over the agent's option.
        turn = Turn(agent="short", input=[Message("user", [TextPart("a b c d")])])
        turn.limits.max_output_tokens = 3
        assert (await kernel.runs.start(turn).wait()).text == "a b c "
        # Every option fills the same-named limit the request left open.
        tuned = Turn(agent="tuned", input=[Message("user", [TextPart("x")])])
        tuned.limits.temperature = 0.9
        await kernel.runs.start(tuned).wait()
        limits = tuned.limits
        assert (limits.temperature, limits.presence_penalty, limits.reasoning_effort) == (0.9, 0.5, "low")
        assert limits.frequency_penalty is None


def test_default_agent_setting_is_the_fallback(make_app):
    app = make_app({"kernel": {"default_agent": "other"}, "agents": {"other": {"provider": "echo"}}})
    agents = app.extensions["kernel"].agents
    assert agents.resolve("gpt-4o", {}).name == "other"
    assert agents.resolve("main", {}).name == "main"
