"""Custom (freeform) tools and hosted-tool options on /v1/chat/completions."""

from __future__ import annotations

import json

from openai.types.chat import ChatCompletionMessageCustomToolCall

PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
CUSTOM = {"type": "custom", "custom": {"name": "apply_patch", "description": "Edit files",
                                       "format": {"type": "grammar",
                                                  "grammar": {"syntax": "lark", "definition": 'start: "x"'}}}}


def test_forced_custom_tool_call_round_trip(server):
    body = {"model": "agent:transcript", "messages": [{"role": "user", "content": PATCH}], "tools": [CUSTOM],
            "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}}}
    resp = server.post(body)  # checked in strict mode against the SDK's ChatCompletion
    assert resp.status_code == 200, resp.text
    completion = server.sdk.chat.completions.create(**body)
    [call] = completion.choices[0].message.tool_calls
    assert isinstance(call, ChatCompletionMessageCustomToolCall)
    assert call.custom.name == "apply_patch" and call.custom.input.startswith("system: Be brief.")
    assert completion.choices[0].finish_reason == "tool_calls"
    follow = {"model": "agent:transcript", "tools": [CUSTOM], "messages": [
        {"role": "user", "content": PATCH},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "custom", "custom": {"name": "apply_patch", "input": PATCH}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Done!"},
    ]}
    answer = server.sdk.chat.completions.create(**follow).choices[0].message.content
    assert f"custom_tool_call apply_patch<<{PATCH}>> [{call.id}]" in answer
    assert f"tool_result [{call.id}]: Done!" in answer


def test_streamed_custom_tool_call_carries_its_input(server):
    body = {"model": "agent:transcript", "messages": [{"role": "user", "content": "go"}], "tools": [CUSTOM],
            "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}}, "stream": True}
    # The SDK's chunk model has no custom call shape: the stream mirrors the whole-body one.
    with server.raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line) for line in lines[:-1]]
    pieces = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    pieces = [p[0] for p in pieces if p]
    assert pieces[0]["type"] == "custom" and pieces[0]["custom"]["name"] == "apply_patch"
    assert "".join(p["custom"]["input"] for p in pieces) == "system: Be brief.\nuser: go"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and lines[-1] == "[DONE]"


def test_hosted_and_audio_options_are_refused_by_name(server):
    base = {"model": "agent:transcript", "messages": [{"role": "user", "content": "x"}]}
    for extra, param in [({"web_search_options": {}}, "web_search_options"), ({"audio": {"voice": "alloy"}}, "audio"),
                         ({"modalities": ["text", "audio"]}, "modalities"), ({"verbosity": "loud"}, "verbosity")]:
        resp = server.post({**base, **extra})
        assert resp.status_code == 400, (extra, resp.text)
        assert resp.json()["error"]["param"] == param


def test_verbosity_and_hints_reach_the_turn(server):
    resp = server.post({"model": "agent:transcript", "messages": [{"role": "user", "content": "x"}],
                        "verbosity": "low", "service_tier": "flex", "prompt_cache_key": "k"})
    assert resp.status_code == 200, resp.text
    run = [r for r in server.kernel.runs.runs.values() if r.turn.surface == "chat"][-1]
    assert run.turn.limits.verbosity == "low"
    assert run.turn.limits.hints == {"service_tier": "flex", "prompt_cache_key": "k"}
