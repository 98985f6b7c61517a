"""Codex's default tool set end to end: namespace, custom (apply_patch) and hosted tools.

The request body in client_requests/codex_0171_gpt55.json is what Codex 0.171 sends with
``wire_api = "responses"`` and a model it knows (rebuilt from Codex's source: its tool
specs, the apply_patch lark grammar, the multi_agent_v1 namespace, web_search). The echo
provider behind the default agent is told to call ``apply_patch`` (``call_tool``), so the
unmodified request (tool_choice "auto") gets a deterministic freeform call.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.responses import ResponseCustomToolCall, ResponseFunctionToolCall
from testsupport.sdk_check import assert_event_valid, assert_response_valid

from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread

from .conftest import parse_sse

FIXTURES = Path(__file__).parent / "client_requests"
CODEX = json.loads((FIXTURES / "codex_0171_gpt55.json").read_text())
PATCH = CODEX["input"][-1]["content"][0]["text"]

CONFIG: dict[str, Any] = {
    "plugins": {"openresponses": {"enabled": True}},
    "providers": {
        "patcher": {"kind": "echo", "call_tool": "apply_patch"},
        "spawner": {"kind": "echo", "call_tool": "multi_agent_v1__spawn_agent"},
        "t": {"kind": "echo", "mode": "transcript"},
    },
    "agents": {"main": {"provider": "patcher"}, "spawner": {"provider": "spawner"}, "t": {"provider": "t"}},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("codex")
    app = build_app(merge(default_config(tmp / "state"), CONFIG), tmp / "plugins.toml")
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        yield client


def stream(http: httpx.Client, body: dict[str, Any]) -> tuple[list[dict[str, Any]], httpx.Response]:
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        raw = resp.read()
    assert resp.status_code == 200, raw
    events = parse_sse(raw)
    for event in events:
        assert_event_valid(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events, resp


def test_codex_request_gets_a_custom_apply_patch_call(http):
    events, resp = stream(http, CODEX)
    # web_search is not run here: left out of the model's view, and the header says so.
    assert resp.headers["x-kernel-omitted-tools"] == "web_search"
    final = events[-1]
    assert final["type"] == "response.completed"
    response = assert_response_valid(final["response"])
    [call] = response.output
    assert isinstance(call, ResponseCustomToolCall)
    assert (call.name, call.input) == ("apply_patch", PATCH)
    assert call.call_id and call.id and call.id.startswith("ctc_")
    # The streamed input deltas add up to the input, then .done carries all of it.
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    [done] = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    assert "".join(deltas) == PATCH == done["input"] and done["item_id"] == call.id
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "custom_tool_call" and added["item"]["input"] == ""
    # Every tool the client sent is echoed, hosted and namespace tools included.
    assert [t["type"] for t in final["response"]["tools"]] == [t["type"] for t in CODEX["tools"]]
    namespace = next(t for t in final["response"]["tools"] if t["type"] == "namespace")
    assert [t["name"] for t in namespace["tools"]] == ["spawn_agent", "send_input", "wait", "close_agent"]
    assert final["response"]["text"]["verbosity"] == "low"


def test_codex_follow_up_with_custom_tool_call_output_completes(http):
    events, _ = stream(http, CODEX)
    call = next(i for i in events[-1]["response"]["output"] if i["type"] == "custom_tool_call")
    follow = copy.deepcopy(CODEX)
    # Codex replays the call (without id/status) and answers it.
    follow["input"] += [
        {"type": "custom_tool_call", "call_id": call["call_id"], "name": "apply_patch", "input": call["input"]},
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Success. Updated: A hello.txt"},
    ]
    events, _ = stream(http, follow)
    response = assert_response_valid(events[-1]["response"])
    assert response.status == "completed"
    assert response.output_text == "Success. Updated: A hello.txt"


def test_non_streaming_codex_request_parses_too(http):
    resp = http.post("/v1/responses", json={**CODEX, "stream": False})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-kernel-omitted-tools"] == "web_search"
    response = assert_response_valid(resp.json())
    assert isinstance(response.output[0], ResponseCustomToolCall)


def test_namespaced_call_comes_back_with_name_and_namespace(http):
    events, _ = stream(http, {**CODEX, "model": "spawner", "input": "Review the diff"})
    response = assert_response_valid(events[-1]["response"])
    [call] = response.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.namespace, call.name) == ("multi_agent_v1", "spawn_agent")
    assert json.loads(call.arguments)["message"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "spawn_agent"
    # Codex sends the call back with its namespace: the model sees the name it knows.
    follow = {**CODEX, "model": "t", "input": [
        {"type": "function_call", "call_id": call.call_id, "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "agent 7 started"},
    ]}
    events, _ = stream(http, follow)
    text = assert_response_valid(events[-1]["response"]).output_text
    assert f"tool_call multi_agent_v1__spawn_agent({call.arguments})" in text
    assert "tool_result" in text and "agent 7 started" in text


def test_tool_choice_names_custom_and_namespaced_tools(http):
    body = {**CODEX, "model": "t", "input": "x", "tool_choice": {"type": "custom", "name": "apply_patch"}}
    events, _ = stream(http, body)
    response = assert_response_valid(events[-1]["response"])
    assert isinstance(response.output[0], ResponseCustomToolCall)
    assert events[-1]["response"]["tool_choice"] == {"type": "custom", "name": "apply_patch"}
    body["tool_choice"] = {"type": "function", "name": "wait", "namespace": "multi_agent_v1"}
    events, _ = stream(http, body)
    call = assert_response_valid(events[-1]["response"]).output[0]
    assert isinstance(call, ResponseFunctionToolCall) and (call.namespace, call.name) == ("multi_agent_v1", "wait")
    body["tool_choice"] = {"type": "allowed_tools", "mode": "required",
                           "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]}
    events, _ = stream(http, body)
    assert isinstance(assert_response_valid(events[-1]["response"]).output[0], ResponseCustomToolCall)


@pytest.mark.parametrize("choice, param", [
    ({"type": "web_search"}, "tool_choice.type"),
    ({"type": "web_search_preview"}, "tool_choice.type"),
    ({"type": "mcp", "server_label": "x"}, "tool_choice.type"),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]}, "tool_choice.tools"),
    ({"type": "custom", "name": "exec_command"}, "tool_choice.name"),  # a function, not a custom tool
])
def test_forcing_a_hosted_or_unknown_tool_is_a_400(http, choice, param):
    resp = http.post("/v1/responses", json={**CODEX, "stream": False, "tool_choice": choice})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_hosted_tool_history_items_reach_the_model_as_text(http):
    body = {"model": "t", "input": [
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q1"}},
        {"type": "local_shell_call", "id": "lsh_1", "call_id": "c1", "status": "completed",
         "action": {"type": "exec", "command": ["ls"], "env": {}}},
        {"type": "local_shell_call_output", "id": "lsho_1", "call_id": "c1", "output": "README.md"},
        {"role": "user", "content": "go on"},
    ]}
    resp = http.post("/v1/responses", json=body)
    assert resp.status_code == 200, resp.text
    text = assert_response_valid(resp.json()).output_text
    assert '[web_search_call] {"action":{"type":"search","query":"q1"}}' in text
    assert "[local_shell_call]" in text and '"command":["ls"]' in text
    assert '[local_shell_call_output] {"call_id":"c1","output":"README.md"}' in text


HOSTED = [
    {"type": "web_search"}, {"type": "web_search_preview"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "image_generation"},
    {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "linux"},
    {"type": "local_shell"}, {"type": "shell"}, {"type": "apply_patch"},
    {"type": "web_search", "search_context_size": "low"},
]


def test_every_hosted_tool_type_is_omitted_and_named(http):
    resp = http.post("/v1/responses", json={"model": "t", "input": "hi", "tools": HOSTED})
    assert resp.status_code == 200, resp.text
    kinds = [t["type"] for t in HOSTED]
    assert resp.headers["x-kernel-omitted-tools"].split(",") == kinds[:-1]  # once each, in order
    body = resp.json()
    assert body["tools"] == HOSTED
    assert "tool" not in assert_response_valid(body).output_text  # the model saw no tools
