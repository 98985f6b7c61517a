"""Request checks around server-side tools (name clashes, approval ids, how many MCP servers a
request may bring) and the MCP streaming flows parsed event by event with the openai SDK."""

from __future__ import annotations

from typing import Any

import httpx
from testsupport.mcp_http import post, sdk_event, sdk_response, stream_events

from kernel.testing import AUTH_HEADERS


def error_of(base: str, body: dict[str, Any], path: str = "/v1/responses") -> dict[str, Any]:
    response = httpx.post(f"{base}{path}", headers=AUTH_HEADERS, json=body, timeout=60)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def function(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}


def remote(url: str, label: str = "remote", **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": label, "server_url": url, "require_approval": "never", **extra}


# --------------------------------------------------------------------------- name clashes


def test_a_client_tool_named_like_a_listed_server_tool_is_a_400_naming_both(gateway: str) -> None:
    error = error_of(gateway, {"model": "tooly", "input": "hi",
                               "tools": [function("lookup"), function("other"), function("calc__add")]})
    assert error["param"] == "tools[2].name" and error["code"] == "invalid_value"
    assert error["message"].startswith("tools[2].name 'calc__add' clashes with server tool 'add' of server 'calc'")


def test_a_client_tool_with_the_prefix_but_no_such_server_tool_is_fine(gateway: str) -> None:
    body = post(gateway, {"model": "tooly", "tools": [function("calc__no_such_tool")],
                          "input": '/call calc__add {"a": 1, "b": 2}'})
    assert [i["output"] for i in body["output"] if i["type"] == "mcp_call"] == ["3"]


def test_a_clash_with_a_request_server_tool_names_the_server(gateway: str, mcp_http_url: str) -> None:
    error = error_of(gateway, {"model": "main", "input": "hi",
                               "tools": [remote(mcp_http_url), function("remote__echo")]})
    assert error["param"] == "tools[1].name"
    assert "'remote__echo' clashes with server tool 'echo' of server 'remote'" in error["message"]


def test_allowed_tools_decide_what_can_clash(gateway: str, mcp_http_url: str) -> None:
    # echo is not offered from this server, so a client tool may take the name.
    body = post(gateway, {"model": "main", "input": '/call remote__add {"a": 2, "b": 3}',
                          "tools": [remote(mcp_http_url, allowed_tools=["add"]), function("remote__echo")]})
    assert [i["output"] for i in body["output"] if i["type"] == "mcp_call"] == ["5"]


def test_chat_completions_clash_names_the_function_field(gateway: str) -> None:
    tools = [{"type": "function", "function": {"name": "calc__echo", "parameters": {"type": "object"}}}]
    error = error_of(gateway, {"model": "tooly", "tools": tools, "messages": [{"role": "user", "content": "hi"}]},
                     path="/v1/chat/completions")
    assert error["param"] == "tools[0].function.name"
    assert "'calc__echo' clashes with server tool 'echo' of server 'calc'" in error["message"]


def test_two_server_tool_sets_with_one_name_are_a_400(gateway: str, mcp_http_url: str) -> None:
    error = error_of(gateway, {"model": "tooly", "input": "hi", "tools": [remote(mcp_http_url, label="calc")]})
    assert "two server-side tool sets are named 'calc'" in error["message"]


# --------------------------------------------------------------------------- approvals


def test_an_unknown_approval_request_id_is_a_400_naming_the_field(gateway: str, mcp_http_url: str) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url}
    first = post(gateway, {"model": "main", "tools": [tool], "input": '/call remote__add {"a": 1, "b": 1}'})
    assert [i["type"] for i in first["output"]][-1] == "mcp_approval_request"
    answer = {"type": "mcp_approval_response", "approval_request_id": "apr_nosuch", "approve": True}
    error = error_of(gateway, {"model": "main", "tools": [tool], "previous_response_id": first["id"],
                               "input": [{"type": "message", "role": "user", "content": "go"}, answer]})
    assert error["param"] == "input[1].approval_request_id" and error["code"] == "invalid_value"
    assert "'apr_nosuch'" in error["message"]
    # Without any chain, too.
    error = error_of(gateway, {"model": "main", "tools": [tool], "input": [answer]})
    assert error["param"] == "input[0].approval_request_id"


def test_an_approval_answering_a_request_sent_back_as_input_is_accepted(gateway: str, mcp_http_url: str) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url}
    first = post(gateway, {"model": "main", "tools": [tool], "input": '/call remote__add {"a": 4, "b": 5}',
                           "store": False})
    request = first["output"][-1]
    assert request["type"] == "mcp_approval_request"
    # Stateless chaining: the client sends the request item back with its answer.
    body = post(gateway, {"model": "main", "tools": [tool], "store": False, "input": [
        {"type": "message", "role": "user", "content": '/call remote__add {"a": 4, "b": 5}'},
        *first["output"],
        {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}]})
    assert [i["output"] for i in body["output"] if i["type"] == "mcp_call"] == ["9"]


# --------------------------------------------------------------------------- request servers


def test_max_request_servers_is_enforced(gateway: str, mcp_http_url: str) -> None:
    tools = [remote(mcp_http_url, label=f"s{i}") for i in range(9)]  # the default limit is 8
    error = error_of(gateway, {"model": "main", "input": "hi", "tools": tools})
    assert error["param"] == "tools[8]"
    assert "at most 8" in error["message"] and "[plugins.mcp] max_request_servers" in error["message"]
    body = post(gateway, {"model": "main", "input": '/call s7__add {"a": 3, "b": 3}', "tools": tools[:8]})
    assert [i["output"] for i in body["output"] if i["type"] == "mcp_call"] == ["6"]


# --------------------------------------------------------------------------- every event, strictly


def strict_stream(base: str, body: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    events = stream_events(base, body)
    for event in events:
        sdk_event(event)
    final = events[-1]["response"]
    sdk_response(final)
    return [e["type"] for e in events], final


def test_stdio_and_http_server_calls_stream_strictly_valid_events(gateway: str) -> None:
    for model, label, tool in (("tooly", "calc", "calc__echo"), ("webby", "web", "web__echo")):
        kinds, final = strict_stream(gateway, {"model": model, "input": f'/call {tool} {{"text": "hi"}}'})
        assert "response.mcp_call.completed" in kinds and final["output"][0]["server_label"] == label


def test_failed_calls_stream_strictly_valid_events(gateway: str) -> None:
    kinds, final = strict_stream(gateway, {"model": "tooly", "input": '/call calc__fail {"message": "no"}'})
    assert "response.mcp_call.failed" in kinds and final["output"][0]["status"] == "failed"


def test_listing_and_approval_flow_streams_strictly_valid_events(gateway: str, mcp_http_url: str) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url}
    kinds, first = strict_stream(gateway, {"model": "main", "tools": [tool],
                                           "input": '/call remote__add {"a": 20, "b": 22}'})
    assert ["response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed"] == \
        [k for k in kinds if "mcp_list_tools" in k]
    request = first["output"][-1]
    assert request["type"] == "mcp_approval_request"
    kinds, approved = strict_stream(gateway, {
        "model": "main", "tools": [tool], "previous_response_id": first["id"],
        "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}]})
    assert "response.mcp_call.completed" in kinds
    [call] = [i for i in approved["output"] if i["type"] == "mcp_call"]
    assert call["approval_request_id"] == request["id"] and call["output"] == "42"


def test_a_listing_that_fails_streams_strictly_valid_events(gateway: str) -> None:
    # Nothing listens on this loopback port: the listing fails, the response still completes.
    tool = remote("http://127.0.0.1:9/mcp", label="gone")
    kinds, final = strict_stream(gateway, {"model": "main", "tools": [tool], "input": "hello"})
    assert "response.mcp_list_tools.failed" in kinds
    [listing] = [i for i in final["output"] if i["type"] == "mcp_list_tools"]
    assert listing["error"] and final["status"] == "completed"

