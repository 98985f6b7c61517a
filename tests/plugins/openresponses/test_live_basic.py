"""POST /v1/responses on a real Hypercorn server: inputs, the model's view, echoes, sessions, streams."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from kernel import Message, ToolResult

from .test_live_media import PNG_URL, tiny_pdf


def _normalised(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what differs between two identical requests (ids, clocks)."""
    out = {k: v for k, v in resource.items() if k not in ("id", "created_at", "completed_at")}
    out["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in resource["output"]]
    return out


def test_string_input(server):
    body = server.create({"model": "words", "input": "hello big world"})
    assert body["status"] == "completed" and body["object"] == "response"
    assert body["id"].startswith("resp_") and isinstance(body["completed_at"], int)
    [message] = body["output"]
    assert message["id"].startswith("msg_") and message["status"] == "completed" and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": "hello big world", "annotations": [],
                                   "logprobs": []}]
    assert body["usage"]["output_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + 3
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert body["model"] == "words" and body["error"] is None and body["incomplete_details"] is None


def test_stream_ends_with_the_same_resource_as_a_plain_request(server):
    request = {"model": "thinker", "input": "one two three", "temperature": 0.5, "metadata": {"k": "v"}}
    plain = server.create(request)
    stream = server.stream(request)
    assert stream.types[:2] == ["response.created", "response.in_progress"]
    assert stream.terminal["type"] == "response.completed"
    assert _normalised(stream.terminal["response"]) == _normalised(plain)
    assert stream.text == "one two three"
    # The reasoning item came first, with its own events.
    assert [i["type"] for i in plain["output"]] == ["reasoning", "message"]
    assert plain["output"][0]["id"].startswith("rs_")
    assert stream.of("response.reasoning.done")[0]["text"] == plain["output"][0]["content"][0]["text"]
    # created/in_progress carry a full resource with no output yet.
    assert stream.events[0]["response"]["status"] == "in_progress"
    assert stream.events[0]["response"]["output"] == []
    # One event per chunk, LF only: every event block is exactly "event: ...\ndata: ...\n\n".
    assert stream.raw.count(b"\n\nevent: ") == len(stream.events) - 1


def test_echoes_request_parameters(server):
    tool = {"type": "function", "name": "lookup", "description": "Look up", "strict": True,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
                           "additionalProperties": False}}
    body = server.create({
        "model": "words", "input": "x", "instructions": "Be brief.", "tools": [tool], "tool_choice": "none",
        "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.1, "frequency_penalty": -0.1,
        "max_output_tokens": 100, "max_tool_calls": 3, "parallel_tool_calls": False, "truncation": "auto",
        "metadata": {"a": "1"}, "safety_identifier": "sid", "prompt_cache_key": "pck", "service_tier": "flex",
        "reasoning": {"effort": "low", "summary": "auto"}, "text": {"format": {"type": "text"}, "verbosity": "low"},
        "top_logprobs": 2, "include": ["reasoning.encrypted_content"], "user": "u1",
    })
    assert body["instructions"] == "Be brief."
    assert body["tools"] == [tool]
    assert body["tool_choice"] == "none"
    assert (body["temperature"], body["top_p"], body["presence_penalty"], body["frequency_penalty"]) == (
        0.2, 0.9, 0.1, -0.1)
    assert (body["max_output_tokens"], body["max_tool_calls"], body["parallel_tool_calls"]) == (100, 3, False)
    assert body["truncation"] == "auto" and body["metadata"] == {"a": "1"}
    assert (body["safety_identifier"], body["prompt_cache_key"], body["service_tier"]) == ("sid", "pck", "flex")
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert body["top_logprobs"] == 2
    # store defaults to true: the plugin keeps responses (see test_stored_*.py).
    assert body["store"] is True and body["background"] is False


def test_defaults_are_echoed(server):
    body = server.create({"input": "x"})
    assert body["model"] == "agent:main"  # no model: the default agent
    assert (body["temperature"], body["top_p"], body["presence_penalty"], body["frequency_penalty"]) == (
        1.0, 1.0, 0.0, 0.0)
    assert (body["tool_choice"], body["tools"], body["truncation"], body["parallel_tool_calls"]) == (
        "auto", [], "disabled", True)
    assert body["text"] == {"format": {"type": "text"}} and body["metadata"] == {}


def test_multi_turn_items_become_history_and_input(server):
    body = server.create({"model": "main", "input": [
        {"role": "user", "content": "hi"},  # no "type": still a message
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}],
         "phase": "final_answer"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "how "},
                                                        {"type": "input_text", "text": "are you"}]},
    ]})
    assert body["output"][0]["content"][0]["text"] == "user: hi\nassistant: hello\nuser: how  are you"
    run = server.runs_of("main")[-1]
    assert [type(i).__name__ for i in run.turn.history] == ["Message", "Message"]
    assert run.turn.history[1].phase == "final_answer"
    [current] = run.turn.input
    assert isinstance(current, Message) and current.role == "user" and current.text == "how are you"


def test_system_developer_and_instructions_become_the_system_text(server):
    body = server.create({"model": "main", "instructions": "Be brief.", "input": [
        {"type": "message", "role": "system", "content": "You are a pirate."},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use metric."}]},
        {"type": "message", "role": "user", "content": "Distance to the moon?"},
    ]})
    assert body["output"][0]["content"][0]["text"] == (
        "system: Be brief.\n\nYou are a pirate.\n\nUse metric.\nuser: Distance to the moon?")
    assert body["instructions"] == "Be brief."


def test_reasoning_and_function_items_reach_the_model(server):
    body = server.create({"model": "main", "input": [
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "need a tool"}],
         "encrypted_content": "opaque"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]})
    assert body["output"][0]["content"][0]["text"] == (
        "user: weather?\nreasoning: need a tool\ntool_call get_weather({\"city\":\"Rome\"}) [call_1]\n"
        "tool_result [call_1]: sunny")
    run = server.runs_of("main")[-1]
    assert run.turn.history[1].encrypted_content == "opaque"
    assert [type(i) for i in run.turn.input] == [ToolResult]


def test_item_reference_resolves_to_an_item_of_the_same_request(server):
    body = server.create({"model": "main", "input": [
        {"type": "message", "id": "msg_a", "role": "user", "content": "remember me"},
        {"type": "item_reference", "id": "msg_a"},
        {"id": "msg_a"},  # the type may be left out
    ]})
    assert body["output"][0]["content"][0]["text"] == "user: remember me\nuser: remember me\nuser: remember me"
    missing = server.post({"model": "main", "input": [{"type": "item_reference", "id": "msg_zz"}]})
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "input[0].id"


def test_sessions_by_user_and_header_and_none_without(server):
    user = f"u-{uuid.uuid4().hex[:8]}"
    server.create({"model": "main", "input": "first", "user": user})
    second = server.create({"model": "main", "input": "second", "user": user})
    assert second["output"][0]["content"][0]["text"] == "user: first\nassistant: user: first\nuser: second"

    key = f"k-{uuid.uuid4().hex[:8]}"
    server.create({"model": "main", "input": "alpha"}, headers={"x-session-key": key})
    again = server.create({"model": "main", "input": "beta"}, headers={"x-session-key": key})
    assert again["output"][0]["content"][0]["text"].startswith("user: alpha\n")

    # Neither header nor user: a fresh session every time, nothing kept.
    server.create({"model": "main", "input": "gamma"})
    alone = server.create({"model": "main", "input": "delta"})
    assert alone["output"][0]["content"][0]["text"] == "user: delta"
    assert server.runs_of("main")[-1].turn.session_key is None
    bad = server.post({"model": "main", "input": "x"}, headers={"x-session-key": "a\tb"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-session-key"


def test_text_format_reaches_the_provider_and_echoes_per_schema(server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = server.create({"model": "words", "input": "{\"city\": \"Rome\"}", "text": {"format": {
        "type": "json_schema", "name": "city", "schema": schema, "strict": True}}})
    assert server.runs_of("words")[-1].turn.response_format == {
        "type": "json_schema", "name": "city", "schema": schema, "strict": True}
    # The published ResponseResource schema types the echoed "schema" as null.
    assert body["text"]["format"] == {"type": "json_schema", "name": "city", "description": None, "schema": None,
                                      "strict": True}
    server.create({"model": "words", "input": "{}", "text": {"format": {"type": "json_object"}}})
    assert server.runs_of("words")[-1].turn.response_format == {"type": "json_object"}


def test_keepalive_pings_during_silence(make_app, live_server, sse):
    import httpx

    from kernel.testing import AUTH_HEADERS

    app = make_app({"plugins": {"openresponses": {"enabled": True, "keepalive_seconds": 0.05}},
                    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.3}},
                    "agents": {"main": {"provider": "slow"}}})
    with live_server(app) as base:
        with httpx.stream("POST", f"{base}/v1/responses", headers=AUTH_HEADERS, timeout=30,
                          json={"input": "a b", "stream": True}) as resp:
            raw = resp.read()
    assert b": ping\n\n" in raw
    events = sse.parse(raw)
    sse.check(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "a b"


SCENARIOS = {
    "multi-turn": {"model": "main", "input": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"},
                                              {"role": "user", "content": "again"}]},
    "system+developer+instructions": {"model": "main", "instructions": "I", "input": [
        {"role": "system", "content": "S"}, {"role": "developer", "content": "D"}, {"role": "user", "content": "u"}]},
    "tool follow-up": {"model": "main", "input": [
        {"role": "user", "content": "w?"},
        {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "sunny"}]},
    "parallel calls": {"model": "words", "input": "x", "tool_choice": "required", "tools": [
        {"type": "function", "name": "a"}, {"type": "function", "name": "b"}]},
    "allowed tools": {"model": "words", "input": "x", "tools": [
        {"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}},
    "file": {"model": "main", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "a.csv", "file_data": "YSxiCjEsMg=="}]}]},
    "pdf": {"model": "main", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "r.pdf", "file_data": base64.b64encode(tiny_pdf("Hello PDF")).decode()}]}]},
    "image": {"model": "vision", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": PNG_URL, "detail": "high"}]}]},
    "image placeholder": {"model": "main", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": PNG_URL}]}]},
    "reasoning": {"model": "thinker", "input": "why"},
    "truncated": {"model": "words", "input": " ".join(["w"] * 30), "max_output_tokens": 16},
}


def test_every_scenario_streams_valid_events_ending_in_the_plain_resource(server):
    for name, body in SCENARIOS.items():
        plain = server.create(body)  # the body is validated against ResponseResource
        stream = server.stream(body)  # every event validated against the spec, order checked
        assert _normalised(stream.terminal["response"]) == _normalised(plain), name
        assert plain["output"], name
    # What the media scenarios showed the model (the transcript echo repeats it).
    assert "Hello PDF" in server.create(SCENARIOS["pdf"])["output"][0]["content"][0]["text"]
    assert server.create(SCENARIOS["image"])["output"][0]["content"][0]["text"] == "user: see [image image/png]"


def test_agent_routing_by_model_and_header(server):
    # model "words" would echo the bare text; the header wins and the transcript agent answers.
    routed = server.create({"model": "words", "input": "hi"}, headers={"x-agent-id": "main"})
    assert routed["output"][0]["content"][0]["text"] == "user: hi" and routed["model"] == "words"
    assert server.create({"model": "agent:words", "input": "hi"})["output"][0]["content"][0]["text"] == "hi"
    # Any other model string reaches the default agent, which may pass it upstream.
    upstream = server.create({"model": "gpt-4o-mini", "input": "hi"})
    assert upstream["model"] == "gpt-4o-mini" and server.runs_of("main")[-1].turn.model == "gpt-4o-mini"
    unknown = server.post({"input": "hi"}, headers={"x-agent-id": "nobody"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


def test_every_route_needs_the_token(server):
    import httpx

    for path in ("/v1/responses", "/v1/responses/compact"):
        resp = httpx.post(f"{server.base}{path}", json={"model": "main", "input": "x"})
        assert resp.status_code == 401, path
        assert resp.json()["error"]["type"] == "authentication_error"
        wrong = httpx.post(f"{server.base}{path}", json={"model": "main", "input": "x"},
                           headers={"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401, path
