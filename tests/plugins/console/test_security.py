"""Sign-in, the session cookie, CSRF, security headers and owner scoping, over real HTTP."""

from __future__ import annotations

import time

import httpx

from kernel.testing import TEST_TOKEN
from plugins.console.session import COOKIE_NAME, Sessions

from .conftest import ALICE_SECRET, BOB_SECRET, Console


def csrf_of(page: httpx.Response) -> str:
    return page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_pages_need_a_session_and_a_wrong_secret_is_refused(console: Console) -> None:
    http = httpx.Client(base_url=console.base, timeout=30)
    for path in ("/console/", "/console/playground", "/console/responses", "/console/runs", "/console/usage"):
        resp = http.get(path)
        assert resp.status_code == 303 and resp.headers["location"] == "/console/login"
    form = http.get("/console/login")
    token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    refused = http.post("/console/login", data={"csrf": token, "secret": "wrong-secret-0123456789"})
    assert refused.status_code == 401 and "was not accepted" in refused.text
    assert COOKIE_NAME not in http.cookies
    # Without the form's token (cookie and field must match) nothing is even checked.
    fresh = httpx.Client(base_url=console.base, timeout=30)
    assert fresh.post("/console/login", data={"secret": TEST_TOKEN}).status_code == 403
    assert COOKIE_NAME not in fresh.cookies


def test_the_session_cookie_is_httponly_strict_signed_and_holds_no_secret(console: Console) -> None:
    http = httpx.Client(base_url=console.base, timeout=30)
    form = http.get("/console/login")
    token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    done = http.post("/console/login", data={"csrf": token, "secret": ALICE_SECRET})
    cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE_NAME))
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs and "max-age=43200" in attrs
    assert ALICE_SECRET not in cookie
    page = http.get("/console/")
    assert page.status_code == 200 and ALICE_SECRET not in page.text and TEST_TOKEN not in page.text
    assert '<strong id="principal">alice</strong>' in page.text
    # A forged or altered cookie is no session.
    value = http.cookies[COOKIE_NAME]
    forged = httpx.Client(base_url=console.base, cookies={COOKIE_NAME: value[:-2] + "xx"}, timeout=30)
    assert forged.get("/console/").status_code == 303
    assert forged.get("/console/api/runs").status_code == 401


def test_a_session_expires_and_ends_when_its_secret_changes(console: Console) -> None:
    sessions: Sessions = console.app.extensions["kernel"] and __import__(
        "plugins.console.plugin", fromlist=["_SESSIONS"])._SESSIONS[console.kernel]
    value = sessions.issue("alice")
    assert sessions.verify(value) is not None
    secrets = {"alice": "a-new-secret-0123456789"}
    changed = Sessions(sessions._key, sessions.max_age, secrets.get)
    assert changed.verify(value) is None  # issued for the old secret
    short = Sessions(sessions._key, 1, console.kernel.auth.secret_for)
    value = short.issue("alice")
    time.sleep(2.1)
    assert short.verify(value) is None


def test_state_changing_requests_need_the_csrf_token(console: Console) -> None:
    http = console.sign_in(ALICE_SECRET)
    csrf = csrf_of(http.get("/console/"))
    body = {"model": "main", "input": "hello"}
    refused = http.post("/v1/responses", json=body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = http.post("/v1/responses", json=body, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    foreign = http.post("/v1/responses", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]["message"]
    ok = http.post("/v1/responses", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "hello"
    rid = ok.json()["id"]
    assert http.delete(f"/-/responses/{rid}").status_code == 403
    assert http.post("/console/api/runs/run_x/cancel").status_code == 403
    assert http.post("/console/logout", data={}).status_code == 403
    assert http.get("/console/").status_code == 200  # still signed in
    # Reads need no token; the session acts as alice.
    assert http.get(f"/v1/responses/{rid}").json()["id"] == rid
    assert http.delete(f"/-/responses/{rid}", headers={"X-CSRF-Token": csrf}).status_code == 200
    out = http.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303 and COOKIE_NAME not in http.cookies
    assert http.get("/console/").status_code == 303


def test_every_console_answer_carries_the_security_headers(console: Console) -> None:
    http = console.sign_in(ALICE_SECRET)
    for path in ("/console/login", "/console/", "/console/playground", "/console/static/console.css",
                 "/console/api/runs"):
        headers = http.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert http.get("/console/").headers["cache-control"] == "no-store"


def test_static_files_cannot_escape_their_folder(console: Console) -> None:
    # Redirects followed: the router merges "//" with a 308 that stays under /console/static/.
    http = httpx.Client(base_url=console.base, timeout=30, follow_redirects=True)
    assert http.get("/console/static/console.css").status_code == 200
    for path in ("/console/static/../session.py", "/console/static/%2e%2e/session.py",
                 "/console/static/..%2fsession.py", "/console/static//etc/passwd"):
        assert http.get(path).status_code == 404, path


def test_live_runs_api_is_owner_scoped_and_cancels(console: Console) -> None:
    with console.client(ALICE_SECRET) as alice, console.client(BOB_SECRET) as bob, console.client() as admin:
        rid = alice.post("/v1/responses", json={"model": "slow", "input": "a b c d e f g h i j k l",
                                                "background": True}).json()["id"]
        deadline = time.monotonic() + 10
        while not (runs := alice.get("/console/api/runs").json()["data"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["agent"] for r in runs] == ["slow"] and runs[0]["principal"] == "alice"
        assert bob.get("/console/api/runs").json()["data"] == []
        assert [r["id"] for r in admin.get("/console/api/runs").json()["data"]] == [runs[0]["id"]]
        missing = bob.post(f"/console/api/runs/{runs[0]['id']}/cancel")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
        assert alice.post(f"/console/api/runs/{runs[0]['id']}/cancel").json()["cancel_requested"] is True
        deadline = time.monotonic() + 10
        while alice.get(f"/v1/responses/{rid}").json()["status"] != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alice.get(f"/v1/responses/{rid}").json()["status"] == "cancelled"
        again = alice.post(f"/console/api/runs/{runs[0]['id']}/cancel")
        assert again.status_code in (404, 409)


def test_the_overview_shows_each_providers_health_report(console: Console) -> None:
    http = console.sign_in(TEST_TOKEN)
    page = http.get("/console/").text
    providers = page.split('<table id="providers">', 1)[1].split("</table>", 1)[0]
    assert "slow" in providers and "mode <strong>last_user</strong>" in providers
    assert 'class="dot ok"' in providers
