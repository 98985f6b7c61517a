"""The hook secret, and the limits every hook request meets, against a real server."""

from __future__ import annotations

import json

import httpx

from kernel.testing import AUTH_HEADERS
from plugins.hooks.gate import signature_for

WAKE = {"text": "hello", "mode": "next-heartbeat"}


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and err["param"] == param, err
    return err


def test_missing_and_wrong_secrets_are_401(hooks_server, kit):
    with hooks_server() as hub:
        r = hub.post("/hooks/wake", WAKE, headers={})
        err = assert_error(r, 401, "invalid_hook_token")
        assert err["type"] == "authentication_error" and "X-Hook-Token" in err["message"]
        assert r.headers["www-authenticate"] == 'Bearer realm="hooks"'
        for headers in (
            {"Authorization": "Bearer wrong-secret-0123456789"},
            {"X-Hook-Token": kit.token + "x"},
            {"Authorization": f"Basic {kit.token}"},
            AUTH_HEADERS,  # the gateway's own secret is not the hook secret
        ):
            assert_error(hub.post("/hooks/wake", WAKE, headers=headers), 401, "invalid_hook_token")
        assert_error(hub.client.get("/hooks/runs/run_x"), 401, "invalid_hook_token")
        assert hub.transcript(kit.main_key) == []  # nothing got through
        # ... and the hook secret opens nothing outside the hooks.
        assert_error(hub.client.get("/-/plugins", headers=kit.headers), 401, "invalid_api_key")
        assert hub.client.get("/-/plugins", headers=AUTH_HEADERS).status_code == 200


def test_both_headers_are_accepted(hooks_server, kit):
    with hooks_server() as hub:
        assert hub.post("/hooks/wake", WAKE, headers={"X-Hook-Token": kit.token}).status_code == 200
        assert hub.post("/hooks/wake", WAKE, headers={"Authorization": f"bearer {kit.token}"}).status_code == 200
        assert len(hub.transcript(kit.main_key)) == 2


def test_token_in_query_string_is_400_even_with_a_good_header(hooks_server, kit):
    with hooks_server() as hub:
        for name in ("token", "hook_token", "Token"):
            r = hub.post(f"/hooks/wake?{name}={kit.token}", WAKE)
            err = assert_error(r, 400, "token_in_query", param=name)
            assert "Authorization: Bearer" in err["message"] and "X-Hook-Token" in err["message"]
        r = hub.client.get(f"/hooks/runs/run_x?token={kit.token}")
        assert_error(r, 400, "token_in_query", param="token")
        # The secret itself is refused under any name, and never echoed back.
        for query, param in ((f"key={kit.token}", "key"), (f"env=prod&k={kit.token}", "k"),
                             (kit.token, "(the token itself)")):
            r = hub.post(f"/hooks/wake?{query}", WAKE)
            err = assert_error(r, 400, "token_in_query", param=param)
            assert kit.token not in r.text
        assert hub.transcript(kit.main_key) == []
        # An ordinary query string is fine.
        assert hub.post("/hooks/wake?source=cron", WAKE).status_code == 200


def test_github_style_signature_authenticates(hooks_server, kit):
    with hooks_server() as hub:
        body = json.dumps(WAKE).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature_for(kit.token, body)}
        assert hub.client.post("/hooks/wake", content=body, headers=headers).status_code == 200
        headers["X-Hub-Signature-256"] = signature_for("another-secret-0123456789", body)
        assert_error(hub.client.post("/hooks/wake", content=body, headers=headers), 401, "invalid_hook_token")
        tampered = json.dumps({**WAKE, "text": "evil"}).encode()
        headers["X-Hub-Signature-256"] = signature_for(kit.token, body)
        assert_error(hub.client.post("/hooks/wake", content=tampered, headers=headers), 401, "invalid_hook_token")
        assert len(hub.transcript(kit.main_key)) == 1


def test_unknown_hook_is_404_only_after_auth(hooks_server, kit):
    with hooks_server({"mappings": [{"path": "ci", "message": "{{payload.x}}"}]}) as hub:
        assert_error(hub.post("/hooks/nope", {}, headers={}), 401, "invalid_hook_token")
        err = assert_error(hub.post("/hooks/nope", {}), 404, "hook_not_found")
        assert "'nope'" in err["message"] and "wake, agent, ci" in err["message"]


def test_wrong_method_is_405_with_allow(hooks_server, kit):
    with hooks_server({"presets": ["github"]}) as hub:
        for method, path, allow in (
            ("GET", "/hooks/wake", "POST"), ("PUT", "/hooks/agent", "POST"),
            ("POST", "/hooks/runs/run_x", "GET, HEAD"), ("DELETE", "/hooks/runs/run_x", "GET, HEAD"),
            ("GET", "/hooks/github", "POST"),  # a mapped hook
        ):
            r = hub.client.request(method, path, headers=kit.headers)
            assert r.status_code == 405, (method, path, r.text)
            assert r.headers["allow"] == allow
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_body_limit_is_413(hooks_server, kit):
    with hooks_server({"max_body_bytes": 1024}) as hub:
        big = {"text": "x" * 2000, "mode": "next-heartbeat"}
        assert_error(hub.post("/hooks/wake", big), 413, "request_too_large")

        def chunks():  # no Content-Length: the limit holds while reading
            yield b'{"text": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}'

        r = hub.client.post("/hooks/wake", content=chunks(),
                            headers={**kit.headers, "Content-Type": "application/json"})
        assert_error(r, 413, "request_too_large")
        assert hub.post("/hooks/wake", {"text": "x" * 900, "mode": "next-heartbeat"}).status_code == 200
        assert len(hub.transcript(kit.main_key)) == 1


def test_default_body_limit_is_256_kb(hooks_server, kit):
    with hooks_server() as hub:
        def body_of(size: int) -> bytes:
            envelope = b'{"mode": "next-heartbeat", "text": ""}'
            return envelope[:-2] + b"x" * (size - len(envelope)) + b'"}'

        def post(body: bytes) -> httpx.Response:
            return hub.client.post("/hooks/wake", content=body,
                                   headers={**kit.headers, "Content-Type": "application/json"})

        limit = 256 * 1024
        assert len(body_of(limit)) == limit
        assert post(body_of(limit)).status_code == 200
        err = assert_error(post(body_of(limit + 1)), 413, "request_too_large")
        assert "262144-byte limit" in err["message"]
        assert len(hub.transcript(kit.main_key)) == 1


def test_custom_base_path(hooks_server, kit):
    with hooks_server({"base_path": "/inbound/hooks/"}) as hub:
        r = hub.post("/inbound/hooks/wake", WAKE)
        assert r.status_code == 200, r.text
        run_id = hub.post("/inbound/hooks/agent", {"message": "x", "summary_to_main": False}).json()["run_id"]
        assert hub.client.get(f"/inbound/hooks/runs/{run_id}", headers=kit.headers).status_code == 200
        # Nothing answers at the default path any more (the gateway's own auth guards it).
        assert hub.post("/hooks/wake", WAKE).status_code in (401, 404)
        assert len(hub.transcript(kit.main_key)) == 1


def test_bad_bodies_and_fields_are_400_naming_the_field(hooks_server, kit):
    with hooks_server() as hub:
        post_raw = lambda content, ctype="application/json": hub.client.post(  # noqa: E731
            "/hooks/wake", content=content, headers={**kit.headers, "Content-Type": ctype})
        assert_error(post_raw(b"{not json"), 400, "invalid_json")
        assert_error(post_raw(b"[1, 2]"), 400, "invalid_json")
        assert_error(post_raw(b""), 400, "invalid_json")
        assert_error(post_raw(b"text=hi", "application/x-www-form-urlencoded"), 415, "unsupported_media_type")
        for body, param in (({}, "text"), ({"text": ""}, "text"), ({"text": 5}, "text"),
                            ({"text": "x", "mode": "soon"}, "mode"), ({"text": "x", "extra": 1}, "extra")):
            err = assert_error(hub.post("/hooks/wake", body), 400, "invalid_field", param=param)
            assert param in err["message"]
        assert hub.transcript(kit.main_key) == []


def test_rate_limit_per_hook_is_429_with_retry_after(hooks_server, kit):
    options = {"rate_limit_per_minute": 2,
               "mappings": [{"path": "once", "message": "{{payload.x}}", "action": "wake",
                             "wake_mode": "next-heartbeat", "rate_limit_per_minute": 1}]}
    with hooks_server(options) as hub:
        for _ in range(3):  # failed auth does not use up the budget
            assert hub.post("/hooks/wake", WAKE, headers={}).status_code == 401
        assert hub.post("/hooks/wake", WAKE).status_code == 200
        assert hub.post("/hooks/wake", WAKE).status_code == 200
        r = hub.post("/hooks/wake", WAKE)
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert err["type"] == "rate_limit_error" and "2 requests per minute" in err["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Each hook has its own window.
        assert hub.post("/hooks/agent", {"message": "hi", "summary_to_main": False}).status_code == 202
        assert hub.post("/hooks/once", {"x": "a"}).status_code == 200
        r = hub.post("/hooks/once", {"x": "b"})
        assert_error(r, 429, "rate_limit_exceeded")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert len(hub.transcript(kit.main_key)) == 3  # two wakes and one mapped wake
