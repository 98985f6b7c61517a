"""The app shell: health, plugin listing, error bodies, body limits, request ids and the access log."""

from __future__ import annotations

import http.client
import json
import logging

import httpx
import pytest
from quart import Blueprint, jsonify, websocket
from websockets.exceptions import InvalidStatus
from websockets.sync import client as ws_client

from kernel import ApiError, hookimpl
from kernel.app import route_table
from kernel.auth import public
from kernel.http import read_json
from kernel.testing import AUTH_HEADERS, TEST_TOKEN

EXAMPLE = {"plugins": {"example": {"enabled": True, "max_body_bytes": 64}}}
JSON = {**AUTH_HEADERS, "Content-Type": "application/json"}


class Faulty:
    """A test plugin whose views fail in the ways views fail."""

    @hookimpl
    def register_routes(self, kernel, settings):
        bp = Blueprint("faulty", __name__)

        @bp.get("/faulty/crash")
        async def crash():
            raise RuntimeError("secret internals: db password is hunter2")

        @bp.get("/faulty/upstream")
        async def upstream():
            raise ApiError(502, "the upstream broke", code="upstream_error")

        @bp.get("/faulty/param")
        async def param():
            raise ApiError(400, "input[2].content[0] is not a part", param="input[2].content[0]", code="bad")

        @bp.route("/faulty/multi", methods=["PUT", "DELETE"])
        async def multi():
            return jsonify({})

        return [bp]


def assert_error_body(body, type_: str, code: str | None = None) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


async def test_health_answers_without_auth(make_app, running):
    async with running(make_app()) as (_, client):
        response = await client.get("/-/health")
        assert response.status_code == 200
        assert await response.get_json() == {"status": "ok"}


async def test_plugins_endpoint_is_behind_auth_and_lists_every_installed_plugin(make_app, running):
    async with running(make_app(EXAMPLE)) as (kernel, client):
        assert (await client.get("/-/plugins")).status_code == 401
        response = await client.get("/-/plugins", headers=AUTH_HEADERS)
        assert response.status_code == 200
        data = (await response.get_json())["data"]
        names = [p["name"] for p in data]
        assert names == sorted(kernel.plugins) and {"echo", "example"} <= set(names)
        example = next(p for p in data if p["name"] == "example")
        assert example["source"] == "third-party"
        assert example["enabled"] is True
        assert example["version"] == "0.3.1"
        assert "register_routes" in example["hooks"]
        assert {"methods": "GET", "path": "/example/hello"} in example["routes"]
        assert all(p["enabled"] is False and p["hooks"] == [] for p in data if p["name"] not in ("echo", "example"))


async def test_unknown_path_is_a_json_404(make_app, running):
    async with running(make_app()) as (_, client):
        response = await client.get("/v1/nothing-here", headers=AUTH_HEADERS)
        assert response.status_code == 404
        error = assert_error_body(await response.get_json(), "not_found_error", "not_found")
        assert error["message"] == "no route for GET /v1/nothing-here"


async def test_wrong_method_is_a_json_405_with_allow(make_app, running):
    async with running(make_app(EXAMPLE), ) as (_, client):
        response = await client.post("/-/health")
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert_error_body(await response.get_json(), "invalid_request_error", "method_not_allowed")
        response = await client.get("/example/echo", headers=AUTH_HEADERS)
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
        assert "allowed: POST" in (await response.get_json())["error"]["message"]


async def test_405_lists_every_allowed_method(make_app, running):
    async with running(make_app(extra_plugins={"faulty": Faulty()})) as (_, client):
        response = await client.get("/faulty/multi", headers=AUTH_HEADERS)
        assert response.status_code == 405
        assert response.headers["Allow"] == "DELETE, PUT"


async def test_read_json_accepts_a_json_object(make_app, running):
    async with running(make_app(EXAMPLE)) as (_, client):
        response = await client.post("/example/echo", headers=JSON, data=b'{"a": [1, 2]}')
        assert response.status_code == 200
        assert await response.get_json() == {"received": {"a": [1, 2]}, "principal": "default"}
        vendor = {**AUTH_HEADERS, "Content-Type": "application/vnd.api+json; charset=utf-8"}
        assert (await client.post("/example/echo", headers=vendor, data=b"{}")).status_code == 200


async def test_oversized_body_is_413_with_an_error_body(make_app, running):
    async with running(make_app(EXAMPLE)) as (_, client):
        response = await client.post("/example/echo", headers=JSON, data=b'{"a": "' + b"x" * 100 + b'"}')
        assert response.status_code == 413
        error = assert_error_body(await response.get_json(), "invalid_request_error", "request_too_large")
        assert "64-byte limit" in error["message"]


class DefaultLimit:
    """A plugin route that sets no body limit of its own."""

    @hookimpl
    def register_routes(self, kernel, settings):
        bp = Blueprint("nolimit", __name__)

        @bp.post("/nolimit")
        async def nolimit():
            return jsonify(await read_json())

        return [bp]


async def test_a_route_without_its_own_limit_gets_the_kernel_max_body_bytes(make_app, running):
    app = make_app({"kernel": {"max_body_bytes": 32}}, extra_plugins={"nolimit": DefaultLimit()})
    async with running(app) as (_, client):
        small = await client.post("/nolimit", headers=JSON, data=b'{"a": 1}')
        assert small.status_code == 200 and await small.get_json() == {"a": 1}
        large = await client.post("/nolimit", headers=JSON, data=b'{"a": "' + b"x" * 40 + b'"}')
        assert large.status_code == 413
        error = assert_error_body(await large.get_json(), "invalid_request_error", "request_too_large")
        assert "32-byte limit" in error["message"]


def test_oversized_chunked_body_gets_413_over_the_wire(make_app, live_server):
    def body():  # no Content-Length: the limit is enforced while reading
        for _ in range(50):
            yield b"x" * 32

    with live_server(make_app(EXAMPLE)) as base:
        response = httpx.post(f"{base}/example/echo", headers=JSON, content=body())
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        declared = httpx.post(f"{base}/example/echo", headers=JSON, content=b"{" + b" " * 200 + b"}")
        assert declared.status_code == 413


# Larger than what loopback socket buffers absorb (a few MB), smaller than the drain limit:
# a server that answered without reading would have the client's send fail with a reset.
UPLOAD = b"x" * (12 * 1024 * 1024)


def _connection(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def test_an_early_answer_reaches_a_client_that_sends_the_whole_body_first(make_app, live_server):
    # http.client, like urllib, requests and curl, writes the whole body before it reads.
    with live_server(make_app(EXAMPLE)) as base:
        conn = _connection(base)
        try:
            conn.request("POST", "/example/echo", body=UPLOAD, headers=JSON)
            response = conn.getresponse()
            assert response.status == 413
            assert json.loads(response.read())["error"]["code"] == "request_too_large"
            assert response.getheader("connection") is None  # fully drained: still usable
            conn.request("POST", "/example/echo", body=UPLOAD, headers={"Content-Type": "application/json"})
            response = conn.getresponse()  # same connection: 401 before the body was looked at
            assert response.status == 401
            assert json.loads(response.read())["error"]["code"] == "invalid_api_key"
            conn.request("PUT", "/-/health", body=UPLOAD)
            response = conn.getresponse()
            assert response.status == 405 and json.loads(response.read())["error"]["type"]
            conn.request("GET", "/-/health")
            assert conn.getresponse().status == 200
        finally:
            conn.close()


def test_a_body_too_large_to_drain_is_refused_at_once_and_the_connection_closed(make_app, live_server):
    with live_server(make_app(EXAMPLE)) as base:
        conn = _connection(base)
        try:
            conn.putrequest("POST", "/example/echo")
            for name, value in JSON.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(1024 ** 3))  # 1 GiB announced, never sent
            conn.endheaders()
            response = conn.getresponse()
            assert response.status == 413
            assert response.getheader("connection") == "close"
            assert json.loads(response.read())["error"]["code"] == "request_too_large"
        finally:
            conn.close()


@pytest.mark.parametrize(("data", "needle"), [
    (b'{"a": 1,}', "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 9"),
    (b'{\n  "a": tru\n}', "at line 2 column 8"),
    (b"", "request body is empty"),
    (b"   ", "request body is empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
])
async def test_malformed_json_is_400_naming_the_problem(make_app, running, data, needle):
    async with running(make_app(EXAMPLE)) as (_, client):
        response = await client.post("/example/echo", headers=JSON, data=data)
        assert response.status_code == 400
        error = assert_error_body(await response.get_json(), "invalid_request_error", "invalid_json")
        assert needle in error["message"]


ROOMY = {"plugins": {"example": {"enabled": True, "max_body_bytes": 1_000_000}}}


@pytest.mark.parametrize(("data", "needle", "param"), [
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply", None),
    (b'{"n": ' + b"9" * 5000 + b"}", "not usable JSON", None),
    (b'{"input": [{"text": "ok"}, {"text": "bad \\ud800 half"}]}', "lone UTF-16 surrogate", "input[1].text"),
    (b'{"temperature": NaN}', "NaN and Infinity are not allowed", "temperature"),
    (b'{"a": {"b": [1, -Infinity]}}', "NaN and Infinity are not allowed", "a.b[1]"),
    # Like the record (about 960 levels inside a tool schema): it decoded, then broke reads.
    (b'{"tools": [{"parameters": ' + b'{"p": ' * 500 + b"{}" + b"}" * 500 + b"}]}",
     "nested more than 64 levels deep", "tools[0].parameters" + ".p" * 61),
])
async def test_json_that_would_fail_later_is_a_400_not_a_500(make_app, running, data, needle, param):
    async with running(make_app(ROOMY)) as (_, client):
        response = await client.post("/example/echo", headers=JSON, data=data)
        assert response.status_code == 400
        error = (await response.get_json())["error"]
        assert needle in error["message"]
        assert error["param"] == param
        paired = await client.post("/example/echo", headers=JSON, data=b'{"t": "\\ud83d\\ude00"}')
        assert paired.status_code == 200  # a surrogate *pair* is an ordinary emoji
        assert (await paired.get_json())["received"] == {"t": "\U0001F600"}


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_non_json_content_type_is_415(make_app, running, ctype):
    headers = dict(AUTH_HEADERS) if ctype is None else {**AUTH_HEADERS, "Content-Type": ctype}
    async with running(make_app(EXAMPLE)) as (_, client):
        response = await client.post("/example/echo", headers=headers, data=b"{}")
        assert response.status_code == 415
        error = assert_error_body(await response.get_json(), "invalid_request_error", "unsupported_media_type")
        assert "application/json" in error["message"]


async def test_api_errors_keep_param_and_code(make_app, running):
    async with running(make_app(extra_plugins={"faulty": Faulty()})) as (_, client):
        response = await client.get("/faulty/param", headers=AUTH_HEADERS)
        assert response.status_code == 400
        error = assert_error_body(await response.get_json(), "invalid_request_error", "bad")
        assert error["param"] == "input[2].content[0]"
        response = await client.get("/faulty/upstream", headers=AUTH_HEADERS)
        assert response.status_code == 502
        assert_error_body(await response.get_json(), "server_error", "upstream_error")


async def test_an_unhandled_error_is_a_500_that_hides_internals_but_logs_the_request_id(make_app, running, caplog):
    caplog.set_level(logging.INFO)
    async with running(make_app(extra_plugins={"faulty": Faulty()})) as (_, client):
        response = await client.get("/faulty/crash", headers={**AUTH_HEADERS, "x-request-id": "req-crash-1"})
        assert response.status_code == 500
        error = assert_error_body(await response.get_json(), "server_error", "internal_error")
        assert "hunter2" not in error["message"]
        assert "req-crash-1" in error["message"]
    logged = [r for r in caplog.records if r.name == "kernel.http"]
    assert any("req-crash-1" in r.getMessage() and r.exc_info for r in logged)


async def test_request_id_is_echoed_or_generated(make_app, running):
    async with running(make_app()) as (_, client):
        response = await client.get("/-/health", headers={"x-request-id": "trace-abc.123"})
        assert response.headers["x-request-id"] == "trace-abc.123"
        first = (await client.get("/-/health")).headers["x-request-id"]
        second = (await client.get("/-/health")).headers["x-request-id"]
        assert first.startswith("req_") and second.startswith("req_") and first != second
        # Error responses carry it too.
        assert (await client.get("/nope", headers={"x-request-id": "r-404"})).headers["x-request-id"] == "r-404"
        assert (await client.get("/-/plugins", headers={"x-request-id": "r-401"})).headers["x-request-id"] == "r-401"
        # An unusable incoming id (too long) is replaced, not reflected.
        replaced = (await client.get("/-/health", headers={"x-request-id": "x" * 500})).headers["x-request-id"]
        assert replaced.startswith("req_")


async def test_access_log_has_the_request_id_but_no_secret_query_or_body(make_app, running, caplog):
    caplog.set_level(logging.INFO, logger="kernel.access")
    app = make_app({**EXAMPLE, "kernel": {"access_log": True}})
    async with running(app) as (_, client):
        await client.post("/example/echo?api_key=query-secret-xyz", data=b'{"note": "BODY-SECRET-123"}',
                          headers={**JSON, "x-request-id": "req-log-1"})
        await client.get("/-/plugins",
                         headers={"Authorization": "Bearer wrong-secret-456", "x-request-id": "req-log-2"})
    lines = [r.getMessage() for r in caplog.records if r.name == "kernel.access"]
    assert len(lines) == 2
    assert lines[0].startswith('req-log-1 "POST /example/echo" 200 ')
    assert lines[0].endswith("principal=default")
    assert lines[1].startswith('req-log-2 "GET /-/plugins" 401 ')
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TEST_TOKEN, "query-secret-xyz", "BODY-SECRET-123", "wrong-secret-456", "Bearer"):
        assert secret not in everything


async def test_access_log_can_be_switched_off(make_app, running, caplog):
    caplog.set_level(logging.INFO, logger="kernel.access")
    async with running(make_app()) as (_, client):
        await client.get("/-/health")
    assert [r for r in caplog.records if r.name == "kernel.access"] == []


def test_route_table_names_the_owner_of_every_route(make_app):
    rows = route_table(make_app(EXAMPLE))
    assert {"methods": "GET", "path": "/-/health", "plugin": "kernel"} in rows
    assert {"methods": "GET", "path": "/-/plugins", "plugin": "kernel"} in rows
    assert {"methods": "GET", "path": "/example/hello", "plugin": "example"} in rows
    assert {"methods": "POST", "path": "/example/echo", "plugin": "example"} in rows
    assert rows == sorted(rows, key=lambda r: (r["path"], r["methods"]))


def test_a_real_server_answers_over_http(make_app, live_server):
    with live_server(make_app(EXAMPLE)) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS) as client:
        assert base.startswith("http://127.0.0.1:")
        hello = client.get("/example/hello", params={"name": "wire"})
        assert hello.status_code == 200
        assert hello.json()["text"] == "hello wire"
        assert hello.headers["content-type"] == "application/json"
        missing = client.delete("/-/plugins")
        assert missing.status_code == 405 and missing.headers["allow"] == "GET, HEAD"


class Sockets:
    """A test plugin with one WebSocket that needs the gateway secret and one @public one."""

    @hookimpl
    def register_routes(self, kernel, settings):
        bp = Blueprint("sockets", __name__)

        async def guarded():
            await websocket.accept()
            await websocket.send("hello")

        @public
        async def open_socket():
            await websocket.accept()
            await websocket.send("anyone")

        bp.add_websocket("/sockets/guarded", "guarded", guarded)
        bp.add_websocket("/sockets/open", "open", open_socket)
        return [bp]


def test_websockets_need_the_gateway_secret_unless_public(make_app, live_server):
    app = make_app(extra_plugins={"sockets": Sockets()})
    with live_server(app) as base:
        url = base.replace("http://", "ws://")
        with pytest.raises(InvalidStatus) as refused:
            ws_client.connect(f"{url}/sockets/guarded")
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as wrong:
            ws_client.connect(f"{url}/sockets/guarded", additional_headers={"Authorization": "Bearer nope"})
        assert wrong.value.response.status_code == 401
        with ws_client.connect(f"{url}/sockets/guarded", additional_headers=AUTH_HEADERS) as sock:
            assert sock.recv(timeout=5) == "hello"
        with ws_client.connect(f"{url}/sockets/open") as sock:
            assert sock.recv(timeout=5) == "anyone"


def test_route_table_labels_websockets(make_app):
    rows = {row["path"]: row for row in route_table(make_app(extra_plugins={"sockets": Sockets()}))}
    assert rows["/sockets/guarded"] == {"methods": "WS", "path": "/sockets/guarded", "plugin": "sockets"}
    assert rows["/-/health"]["methods"] == "GET"
