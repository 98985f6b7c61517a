"""Raw-HTTP error behaviour: status codes, OpenAI error bodies and field paths."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

USER = [{"role": "user", "content": "hi"}]


def error_of(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"},
                   {"role": "user", "content": [{"type": "text", "text": "d"},
                                                {"type": "image_url", "image_url": {"url": "not-a-url"}}]}]},
     "messages[3].content[1].image_url", "invalid_image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0]", "unsupported_content_type"),
    ({"messages": USER, "n": 2}, "n", "unsupported_value"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name", "invalid_value"),
    ({"messages": USER, "model": 5}, "model", "invalid_type"),
    ({"messages": USER, "n": True}, "n", "invalid_type"),
    # Structure first: the (unfetchable) image is never tried while another field is wrong.
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}],
      "tool_choice": "always"}, "tool_choice", "invalid_value"),
    ({"messages": [*USER, {"role": "tool", "tool_call_id": "call_x", "content": "sunny"}]},
     "messages[1].tool_call_id", "invalid_value"),
])
def test_400s_name_the_field(server, body, param, code):
    err = error_of(server.post(body), 400)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    if param == "n" and code == "unsupported_value":
        assert "only one choice is supported" in err["message"]


def test_image_urls_pass_the_fetch_guard(server):
    # A loopback URL is refused by the kernel's fetch guard, before anything is fetched.
    err = error_of(server.post({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]}), 400)
    assert (err["param"], err["code"]) == ("messages[0].content[1].image_url", "media_fetch_failed")


def test_401_without_or_with_a_wrong_token(server):
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}):
        resp = httpx.post(f"{server.base}/v1/chat/completions", json={"messages": USER}, headers=headers)
        assert error_of(resp, 401)["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base}/v1", api_key="nope", max_retries=0).models.list()


def test_404_unknown_agent(server):
    err = error_of(server.post({"model": "agent:nope", "messages": USER}), 404)
    assert (err["param"], err["code"]) == ("model", "model_not_found")
    assert "main" in err["message"]
    err = error_of(server.post({"messages": USER}, headers={"x-agent-id": "ghost"}), 404)
    assert err["code"] == "model_not_found"
    assert error_of(server.http.get("/v1/models/agent:ghost"), 404)["code"] == "model_not_found"


def test_405_413_415_and_bad_json(server):
    resp = server.http.get("/v1/chat/completions")
    assert error_of(resp, 405)["type"] == "invalid_request_error" and resp.headers["Allow"] == "POST"
    assert server.http.post("/v1/models").status_code == 405
    big = {"messages": [{"role": "user", "content": "x" * 250_000}]}
    resp = server.post(big)
    assert error_of(resp, 413)["code"] == "request_too_large"
    # The kernel drained the rest of the body, so the connection stays usable for the
    # requests below (a reset here would show up as "server disconnected").
    assert "connection" not in resp.headers
    resp = server.http.post("/v1/chat/completions", content=json.dumps({"messages": USER}),
                            headers={"content-type": "text/plain"})
    assert error_of(resp, 415)["code"] == "unsupported_media_type"
    resp = server.http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert error_of(resp, 400)["code"] == "invalid_json"


def test_invalid_session_key(server):
    err = error_of(server.post({"messages": USER}, headers={"x-session-key": "k" * 300}), 400)
    assert (err["param"], err["code"]) == ("x-session-key", "invalid_session_key")


@pytest.mark.parametrize("stream", [False, True])
def test_failure_before_streaming_is_an_http_status(server, stream):
    err = error_of(server.post({"model": "agent:broken", "messages": USER, "stream": stream}), 500)
    assert (err["type"], err["code"]) == ("server_error", "provider_error")
    assert "fail_after_words" in err["message"]


def test_failure_after_streaming_began_is_a_final_error_event(server, strict):
    from openai.types.chat import ChatCompletionChunk

    lines = server.stream_lines({"model": "agent:flaky", "messages": [{"role": "user", "content": "a b c d"}]})
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])
    assert error["error"]["code"] == "provider_error" and set(error["error"]) == {"message", "type", "param", "code"}
    chunks = [strict(ChatCompletionChunk, line) for line in lines[:-2]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b "
    assert all(c.choices[0].finish_reason is None for c in chunks)  # no finish chunk on failure

    stream = server.sdk.chat.completions.create(model="agent:flaky", stream=True,
                                                messages=[{"role": "user", "content": "a b c d"}])
    with pytest.raises(openai.APIError, match="fail_after_words"):
        for _ in stream:
            pass


def test_a_session_may_hold_the_call_a_tool_message_answers(server):
    # Without a session the call must be in the request (above); with one, the transcript has it.
    headers = {"x-session-key": f"tools-{uuid.uuid4().hex}"}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    first = server.sdk.chat.completions.create(model="agent:main", messages=[{"role": "user", "content": "Oslo"}],
                                               tools=tools, tool_choice="required", extra_headers=headers)
    (call,) = first.choices[0].message.tool_calls
    second = server.sdk.chat.completions.create(
        model="agent:main", tools=tools, extra_headers=headers,
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "rain"}])
    assert second.choices[0].message.content == "rain" and second.choices[0].finish_reason == "stop"
