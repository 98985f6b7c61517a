"""Truncation, provider failures, disconnects and HTTP errors on a real server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from testsupport.spec import assert_valid, assert_valid_event

from kernel import Finished, ProviderKind, RunEvent, TextDelta, Turn, hookimpl
from kernel.testing import AUTH_HEADERS

from .conftest import wait_for

TWENTY = " ".join(f"w{i}" for i in range(20))


def test_max_output_tokens_makes_an_incomplete_response(server):
    body = server.create({"model": "words", "input": TWENTY, "max_output_tokens": 16})
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["completed_at"] is None
    [message] = body["output"]
    assert message["status"] == "incomplete"
    assert message["content"][0]["text"].split() == TWENTY.split()[:16]
    stream = server.stream({"model": "words", "input": TWENTY, "max_output_tokens": 16})
    assert stream.terminal["type"] == "response.incomplete"
    assert stream.terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert stream.of("response.output_item.done")[0]["item"]["status"] == "incomplete"


def test_provider_failure_before_output_is_a_500_with_a_failed_response(server):
    resp = server.post({"model": "broken", "input": "hello"})
    assert resp.status_code == 500
    body = resp.json()
    assert_valid("ResponseResource", body)
    assert body["status"] == "failed" and body["output"] == []
    assert body["error"]["code"] == "provider_error" and "failed after 0 words" in body["error"]["message"]
    assert "Traceback" not in resp.text


def test_provider_failure_mid_stream(server):
    stream = server.stream({"model": "flaky", "input": "one two three four"})
    assert stream.types[-2:] == ["error", "response.failed"]
    error = stream.events[-2]["error"]
    assert error["code"] == "provider_error" and error["type"] == "server_error"
    failed = stream.terminal["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "provider_error"
    assert stream.text == "one two "
    assert failed["output"][0]["status"] == "incomplete"
    # Non-streaming, the partial output is still returned with the failure.
    resp = server.post({"model": "flaky", "input": "one two three four"})
    assert resp.status_code == 500 and resp.json()["output"][0]["content"][0]["text"] == "one two "


def _newest_run(server, agent: str, known: set[str]):
    wait_for(lambda: any(r.id not in known for r in server.runs_of(agent)))
    return next(r for r in server.runs_of(agent) if r.id not in known)


def test_stream_disconnect_cancels_the_run(server, caplog):
    caplog.set_level(logging.INFO)
    known = {r.id for r in server.runs_of("slow")}
    words = " ".join(f"w{i}" for i in range(200))
    seen = []
    with httpx.Client(base_url=server.base, headers=AUTH_HEADERS, timeout=30) as client:
        with client.stream("POST", "/v1/responses", json={"model": "slow", "input": words, "stream": True}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[len("data: "):]))
                    if seen[-1]["type"] == "response.output_text.delta":
                        break
    for event in seen:  # what the client did get was valid
        assert_valid_event(event)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    run = _newest_run(server, "slow", known)
    wait_for(lambda: run.done)
    assert run.status == "cancelled"
    assert len(run.events_log) < 20  # 200 words at 0.1 s each were not all generated
    assert run._task is not None and run._task.done()
    wait_for(lambda: "client disconnected" in caplog.text)


def test_non_streaming_disconnect_cancels_the_run(server, caplog):
    caplog.set_level(logging.INFO)
    known = {r.id for r in server.runs_of("slow")}
    words = " ".join(f"w{i}" for i in range(200))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base}/v1/responses", headers=AUTH_HEADERS, json={"model": "slow", "input": words},
                   timeout=httpx.Timeout(30, read=0.4))
    run = _newest_run(server, "slow", known)
    wait_for(lambda: run.done)
    assert run.status == "cancelled" and len(run.events_log) < 20
    wait_for(lambda: f"cancelled run {run.id}" in caplog.text)


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    return body["error"]


def test_http_errors(server):
    assert _error(httpx.post(f"{server.base}/v1/responses", json={"input": "x"}), 401)["type"] == (
        "authentication_error")
    missing = _error(server.post({"model": "agent:nope", "input": "x"}), 404)
    assert "nope" in missing["message"] and "main" in missing["message"] and missing["param"] == "model"
    wrong = server.http.get("/v1/responses")
    assert _error(wrong, 405) and wrong.headers["allow"] == "POST"
    assert _error(server.http.post("/v1/responses", content=b"x" * 2_000_001,
                                   headers={"content-type": "application/json"}), 413)["code"] == "request_too_large"
    assert _error(server.http.post("/v1/responses", content=b"input=x",
                                   headers={"content-type": "text/plain"}), 415)
    assert _error(server.http.post("/v1/responses", content=b"{nope",
                                   headers={"content-type": "application/json"}), 400)["code"] == "invalid_json"


@pytest.mark.parametrize(("body", "param"), [
    ({}, "input"),
    ({"input": 5}, "input"),
    ({"input": "x", "temperature": 3}, "temperature"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "max_output_tokens": 8}, "max_output_tokens"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "background": True, "store": False}, "background"),
    ({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "wizard"}]},
     "input[2].role"),
    ({"input": [{"role": "user", "content": 7}]}, "input[0].content"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "bogus_call"}]}, "input[0].type"),  # hosted call items are carried as text
    ({"input": [{"content": "no role"}]}, "input[0].type"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "compaction", "encrypted_content": "forged"}]}, "input[0].encrypted_content"),
])
def test_invalid_bodies_name_the_field(server, body, param):
    resp = server.post({"model": "words", **body})
    error = _error(resp, 404 if param == "previous_response_id" else 400)
    assert error["param"] == param, error
    assert param.split(".")[0].split("[")[0] in error["message"] or error["code"] in ("unsupported_parameter",
                                                                                        "invalid_encrypted_content")


def test_error_bodies_are_json_even_for_streaming_requests(server):
    resp = server.post({"model": "words", "input": "x", "stream": True, "temperature": 9})
    assert resp.headers["content-type"].startswith("application/json")
    assert json.loads(resp.text)["error"]["param"] == "temperature"


@pytest.mark.parametrize(("raw", "param"), [
    # Valid JSON that Python's parser or a UTF-8 encoder cannot handle: a 400, never a 500.
    (b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (b'{"input": "x", "max_output_tokens": ' + b"9" * 5000 + b"}", None),
    (b'{"input": "a\\ud800b"}', "input"),
    (b'{"input": [{"role": "user", "content": [{"type": "input_text", "text": "\\udfff"}]}]}',
     "input[0].content[0].text"),
    (b'{"input": "x", "metadata": {"\\ud800": "v"}}', "metadata"),
])
def test_json_python_cannot_use_is_a_400(server, raw, param):
    resp = server.http.post("/v1/responses", content=raw, headers={"content-type": "application/json"})
    error = _error(resp, 400)
    assert error["param"] == param and error["code"] in ("invalid_json", "invalid_value"), error


def test_paired_surrogate_escapes_are_ordinary_text(server):
    # Clients that escape non-ASCII (json.dumps' default) send emoji as surrogate pairs.
    resp = server.http.post("/v1/responses", content=b'{"model": "words", "input": "hi \\ud83d\\ude00"}',
                            headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["output"][0]["content"][0]["text"] == "hi \U0001F600"


class _SurrogatePlugin:
    """A provider whose text holds a lone surrogate, as an upstream's ``\\ud800`` escape decodes to."""

    @hookimpl
    def register_providers(self) -> list[ProviderKind]:
        return [ProviderKind(kind="surrogate", factory=lambda name, options, kernel: _Surrogate())]


class _Surrogate:
    name = "surrogate"
    accepts_images = False

    async def aclose(self) -> None:
        return None

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        yield TextDelta("bad \ud800 text")
        yield Finished()


def test_unencodable_provider_text_still_goes_out_as_valid_json(make_app, live_server, sse):
    app = make_app({"plugins": {"openresponses": {"enabled": True}}, "providers": {"s": {"kind": "surrogate"}},
                    "agents": {"main": {"provider": "s"}}}, extra_plugins={"surrogate": _SurrogatePlugin()})
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        resp = client.post("/v1/responses", json={"input": "x", "store": False})
        assert resp.status_code == 200, resp.text
        assert b"\\ud800" in resp.content  # escaped, so the body is valid UTF-8 and valid JSON
        body = json.loads(resp.content)
        assert_valid("ResponseResource", body)
        assert body["output"][0]["content"][0]["text"] == "bad \ud800 text"
        with client.stream("POST", "/v1/responses", json={"input": "x", "store": False, "stream": True}) as streamed:
            raw = streamed.read()
        events = sse.parse(raw)
        sse.check(events)
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "bad \ud800 text"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", b'{"model": "words", "input": "hi", "temperature": Infinity}'),
    ("/v1/responses", b'{"model": "words", "input": "hi", "tools": [{"type": "function", "name": "f", '
                      b'"parameters": ' + b'{"a": ' * 960 + b"1" + b"}" * 960 + b"}]}"),
])
def test_unstorable_json_is_a_400_naming_the_field_on_a_real_server(server, path, body):
    resp = server.http.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_value"
    assert error["param"].startswith(("temperature", "tools[0].parameters"))


def test_a_large_body_is_checked_off_the_loop_with_the_same_answers(server):
    # Over kernel.http.LARGE_BODY_BYTES: decoded, walked and validated in a worker thread.
    items = [{"type": "message", "role": "user", "content": f"item {i}"} for i in range(20_000)]
    body = json.dumps({"model": "words", "input": items}).encode()
    assert len(body) > 256 * 1024
    bad = body.replace(b'"item 19999"', b'"item", "x": NaN', 1)
    refused = server.http.post("/v1/responses", content=bad, headers={"content-type": "application/json"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "input[19999].x"
    wrong = json.dumps({"model": "words", "input": items, "temperature": "hot"}).encode()
    invalid = server.http.post("/v1/responses", content=wrong, headers={"content-type": "application/json"})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "temperature"
    assert server.http.post("/v1/responses", content=body, headers={"content-type": "application/json"}
                            ).status_code == 200
