"""MCP tools end to end: real MCP servers (stdio subprocess, streamable HTTP on loopback), the
kernel's agent loop on the echo provider, and the openai SDK parsing every body and event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from testsupport.mcp_http import chat, post, sdk, sdk_check
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread


def items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in body["output"] if i["type"] == kind]


def text(body: dict[str, Any]) -> str:
    return "".join(p["text"] for i in items(body, "message") for p in i["content"])


def test_configured_stdio_server_runs_a_call_and_the_model_reads_the_result(gateway: str) -> None:
    body = post(gateway, {"model": "tooly", "input": '/call calc__add {"a": 2, "b": 40}'})
    sdk_check(body)
    [call] = items(body, "mcp_call")
    assert call["server_label"] == "calc" and call["name"] == "add" and call["output"] == "42"
    assert json.loads(call["arguments"]) == {"a": 2, "b": 40} and call["error"] is None
    assert call["status"] == "completed"
    assert text(body) == "42" and body["status"] == "completed"
    assert not items(body, "mcp_list_tools")  # configured servers are the operator's: no listing item
    # Usage sums both model turns: one call (1 output token) and the answer (1 word).
    assert body["usage"]["output_tokens"] == 2


def test_streamable_http_server_and_sdk_stream(gateway: str) -> None:
    client = sdk(gateway)
    with client.responses.stream(model="webby", input='/call web__echo {"text": "hello there"}') as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [type(e).__name__ for e in events]
    for expected in ("ResponseMcpCallInProgressEvent", "ResponseMcpCallArgumentsDeltaEvent",
                     "ResponseMcpCallArgumentsDoneEvent", "ResponseMcpCallCompletedEvent"):
        assert expected in names, names
    [call] = [i for i in final.output if i.type == "mcp_call"]
    assert call.output == "hello there" and call.server_label == "web"
    assert final.output_text == "hello there"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_tool_error_reaches_the_model_and_the_client(gateway: str) -> None:
    body = post(gateway, {"model": "tooly", "input": '/call calc__fail {"message": "disk on fire"}'})
    sdk_check(body)
    [call] = items(body, "mcp_call")
    assert call["status"] == "failed" and call["output"] is None
    assert "disk on fire" in call["error"]["content"][0]["text"]
    assert "disk on fire" in text(body) and body["status"] == "completed"


def test_a_hanging_tool_times_out_into_an_error_result(gateway: str) -> None:
    started = time.monotonic()
    body = post(gateway, {"model": "tooly", "input": "/call calc__hang {}"})
    assert time.monotonic() - started < 30
    [call] = items(body, "mcp_call")
    assert "timed out after 3 seconds" in call["error"]["content"][0]["text"]
    assert body["status"] == "completed"


def test_large_output_is_truncated_with_a_note(gateway: str) -> None:
    body = post(gateway, {"model": "tooly", "input": '/call calc__big {"size": 200000}'})
    [call] = items(body, "mcp_call")
    assert len(call["output"]) < 70_000 and "[output truncated: " in call["output"]
    assert "of 200000 characters omitted]" in call["output"]


def test_a_server_that_dies_mid_call_gives_an_error_and_is_restarted(gateway: str) -> None:
    first = post(gateway, {"model": "tooly", "input": "/call calc__pid {}"})
    before = items(first, "mcp_call")[0]["output"]
    died = post(gateway, {"model": "tooly", "input": "/call calc__die {}"})
    [call] = items(died, "mcp_call")
    assert call["status"] == "failed" and "closed the connection" in call["error"]["content"][0]["text"]
    after = post(gateway, {"model": "tooly", "input": "/call calc__pid {}"})
    [again] = items(after, "mcp_call")
    assert again["status"] == "completed" and again["output"] != before  # a new process


def test_allowed_tools_filters_what_the_model_is_offered(gateway: str) -> None:
    ok = post(gateway, {"model": "picky", "input": '/call picky__add {"a": 1, "b": 1}'})
    assert items(ok, "mcp_call")[0]["output"] == "2"
    hidden = post(gateway, {"model": "picky", "input": '/call picky__echo {"text": "x"}'})
    assert not items(hidden, "mcp_call")  # not offered, so echo answered with text


def test_parallel_calls_run_at_once(gateway: str) -> None:
    body = post(gateway, {"model": "tooly",
                          "input": '/call calc__overlap {"tag": "a"} && /call calc__overlap {"tag": "b"}'})
    calls = items(body, "mcp_call")
    assert len(calls) == 2 and all(c["status"] == "completed" for c in calls)
    assert any("peak 2" in c["output"] for c in calls)


def test_multi_step_loop_and_the_iteration_limit(gateway: str) -> None:
    steps = '/call calc__add {"a": 1, "b": 2}\n/call calc__echo {"text": "two"}\n/call calc__add {"a": 5, "b": 5}'
    body = post(gateway, {"model": "tooly", "input": steps})
    assert [c["output"] for c in items(body, "mcp_call")] == ["3", "two", "10"]
    limited = post(gateway, {"model": "short", "input": steps})
    assert [c["output"] for c in items(limited, "mcp_call")] == ["3", "two"]
    assert limited["status"] == "completed"
    request_limit = post(gateway, {"model": "tooly", "input": steps, "max_tool_calls": 1})
    assert [c["output"] for c in items(request_limit, "mcp_call")] == ["3"]


def test_client_and_server_tools_in_one_turn(gateway: str) -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    body = post(gateway, {"model": "tooly", "tools": [tool],
                          "input": '/call calc__add {"a": 3, "b": 4} && /call lookup {}'})
    sdk_check(body)
    assert items(body, "mcp_call")[0]["output"] == "7"
    [fc] = items(body, "function_call")
    assert fc["name"] == "lookup"


def test_name_clash_between_client_and_server_tools_is_a_400(gateway: str) -> None:
    tool = {"type": "function", "name": "calc__add", "parameters": {"type": "object", "properties": {}}}
    response = httpx.post(f"{gateway}/v1/responses", headers=AUTH_HEADERS,
                          json={"model": "tooly", "tools": [tool], "input": "hi"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "calc__add" in message and "'calc'" in message


def test_request_server_with_approval_flow(gateway: str, mcp_http_url: str) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url,
            "headers": {"Authorization": "Bearer secret-value"}}
    first = post(gateway, {"model": "main", "tools": [tool], "input": '/call remote__add {"a": 20, "b": 22}'})
    sdk_check(first)
    assert "secret-value" not in json.dumps(first)
    [listing] = items(first, "mcp_list_tools")
    assert {"add", "echo"} <= {t["name"] for t in listing["tools"]}
    [request] = items(first, "mcp_approval_request")
    assert request["name"] == "add" and not items(first, "mcp_call")
    approved = post(gateway, {"model": "main", "tools": [tool], "previous_response_id": first["id"],
                              "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"],
                                         "approve": True}]})
    sdk_check(approved)
    assert not items(approved, "mcp_list_tools")  # reused from the previous response
    [call] = items(approved, "mcp_call")
    assert call["output"] == "42" and call["approval_request_id"] == request["id"]
    assert text(approved) == "42"
    second = post(gateway, {"model": "main", "tools": [tool], "input": '/call remote__add {"a": 1, "b": 1}'})
    [request2] = items(second, "mcp_approval_request")
    denied = post(gateway, {"model": "main", "tools": [tool], "previous_response_id": second["id"],
                            "input": [{"type": "mcp_approval_response", "approval_request_id": request2["id"],
                                       "approve": False}]})
    assert not items(denied, "mcp_call")
    assert "denied" in text(denied)


def test_request_server_never_approval_and_allowed_tools_stream(gateway: str, mcp_http_url: str) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url, "require_approval": "never",
            "allowed_tools": ["echo"]}
    client = sdk(gateway)
    events = list(client.responses.create(model="main", tools=[tool], stream=True,
                                          input='/call remote__echo {"text": "hi"}'))
    names = [type(e).__name__ for e in events]
    assert "ResponseMcpListToolsInProgressEvent" in names and "ResponseMcpListToolsCompletedEvent" in names
    final = events[-1].response
    [listing] = [i for i in final.output if i.type == "mcp_list_tools"]
    assert [t.name for t in listing.tools] == ["echo"]
    assert final.output_text == "hi"


def test_request_server_urls_pass_the_fetch_guard(gateway: str) -> None:
    tool = {"type": "mcp", "server_label": "inside", "server_url": "http://10.1.2.3:9/mcp",
            "require_approval": "never"}
    response = httpx.post(f"{gateway}/v1/responses", headers=AUTH_HEADERS,
                          json={"model": "main", "tools": [tool], "input": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools[0].server_url"


def test_chat_completions_runs_server_tools_invisibly(gateway: str) -> None:
    body = chat(gateway, {"model": "tooly", "messages": [{"role": "user",
                                                         "content": '/call calc__add {"a": 6, "b": 7}'}]})
    assert body["choices"][0]["message"]["content"] == "13"
    assert "tool_calls" not in body["choices"][0]["message"] or not body["choices"][0]["message"]["tool_calls"]
    assert body["usage"]["completion_tokens"] == 2


def test_no_mcp_means_strictly_valid_openresponses_output(gateway: str) -> None:
    body = post(gateway, {"model": "main", "input": "plain words"})
    assert_valid("ResponseResource", body)
    assert [i["type"] for i in body["output"]] == ["message"]


def test_cancel_stops_a_running_tool(gateway: str) -> None:
    with httpx.stream("POST", f"{gateway}/v1/responses", headers=AUTH_HEADERS, timeout=30,
                      json={"model": "tooly", "input": "/call calc__hang {}", "stream": True}) as response:
        for line in response.iter_lines():
            if "response.mcp_call.in_progress" in line:
                break
    # The client left mid-call: the run is cancelled, and the server keeps answering at once.
    started = time.monotonic()
    body = post(gateway, {"model": "tooly", "input": '/call calc__add {"a": 1, "b": 2}'})
    assert items(body, "mcp_call")[0]["output"] == "3"
    assert time.monotonic() - started < 10


def test_request_servers_are_off_unless_enabled(tmp_path: Path, mcp_http_url: str) -> None:
    config = merge(default_config(tmp_path), {"plugins": {"openresponses": {"enabled": True},
                                                          "mcp": {"enabled": True}}})
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url}
    with serve_in_thread(build_app(config, tmp_path / "plugins.toml")) as base:
        response = httpx.post(f"{base}/v1/responses", headers=AUTH_HEADERS,
                              json={"model": "main", "tools": [tool], "input": "hi"})
    assert response.status_code == 400
    assert "request_servers = true" in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "tools[0]"

