"""The console in headless Chromium (Debian's /usr/bin/chromium driven by Playwright) on a real server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from kernel.testing import TEST_TOKEN

from .conftest import ALICE_SECRET, BOB_SECRET, Console

pytestmark = pytest.mark.slow
TIMEOUT_MS = 20_000


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def watch_csp(page: Any) -> list[str]:
    """Console messages about the Content-Security-Policy (there must be none)."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return violations


def sign_in(context: Any, console: Console, secret: str) -> Any:
    page = context.new_page()
    page.goto(f"{console.base}/console/")
    assert page.url == f"{console.base}/console/login"
    page.fill("#secret", secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.base}/console/")
    return page


def status_of(console: Console, secret: str, rid: str) -> str:
    with console.client(secret) as http:
        return http.get(f"/v1/responses/{rid}").json()["status"]


def wait_for_status(console: Console, secret: str, rid: str, wanted: str) -> str:
    deadline = time.monotonic() + 10
    while (status := status_of(console, secret, rid)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return status


class Sockets:
    """The WebSockets a page opens, as Playwright sees them: URL, frames each way, closed or not."""

    def __init__(self, page: Any) -> None:
        self.opened: list[dict[str, Any]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: Any) -> None:
        entry: dict[str, Any] = {"url": ws.url, "sent": [], "received": [], "closed": False}
        ws.on("framesent", lambda payload: entry["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: entry["received"].append(json.loads(payload)))
        ws.on("close", lambda _ws: entry.update(closed=True))
        self.opened.append(entry)


def transport_of(page: Any) -> str | None:
    return page.get_attribute("#pg-transport", "data-transport")


def test_sign_in_refuses_a_wrong_token_and_the_overview_lists_plugins_and_agents(
        console: Console, context: Any) -> None:
    page = context.new_page()
    violations = watch_csp(page)
    page.goto(f"{console.base}/console/")
    page.fill("#secret", "not-the-token-0123456789")
    page.click("button[type=submit]")
    assert page.text_content("#login-error") == "That token or key was not accepted."
    assert page.url.endswith("/console/login")
    transferred: list[int] = []
    page.on("response", lambda r: transferred.append(len(r.body())) if r.status == 200 else None)
    page.fill("#secret", TEST_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.base}/console/")
    page.wait_for_load_state("load")
    assert page.text_content("#principal") == "default" and page.is_visible("text=admin")
    rows = page.query_selector_all("#plugins tbody tr")
    plugins = {row.get_attribute("data-plugin"): row.inner_text() for row in rows}
    for name in ("console", "openresponses", "echo"):
        assert "yes" in plugins[name], plugins[name]
    assert "authenticate_request" in plugins["console"] and "register_routes" in plugins["openresponses"]
    agents = page.inner_text("#agents")
    assert "main" in agents and "slow" in agents and "echoes your words" in agents
    assert "sqlite" in page.inner_text(".tiles")
    assert sum(transferred) < 100_000, transferred  # the overview page with its assets
    assert violations == []
    # Sign out ends the session: the pages ask for a secret again.
    page.click("text=Sign out")
    page.wait_for_url(f"{console.base}/console/login")
    page.goto(f"{console.base}/console/")
    assert page.url.endswith("/console/login")


def test_playground_streams_an_answer_live_over_websocket_and_shows_the_timeline(
        console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    violations = watch_csp(page)
    sockets = Sockets(page)
    page.goto(f"{console.base}/console/playground")
    page.select_option("#pg-agent", "slow")
    page.fill("#pg-message", "tokens arrive one by one")
    page.click("#pg-send")
    # Part of the answer is on screen while the run is still going.
    page.wait_for_function("() => document.querySelector('.answer') && document.querySelector('.answer').textContent"
                           ".length > 0 && document.getElementById('pg-status').textContent === 'in_progress'")
    partial = page.text_content(".answer")
    assert partial and partial != "tokens arrive one by one"
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    assert page.text_content(".answer") == "tokens arrive one by one"
    types = [t.strip() for t in page.locator("#pg-timeline tbody tr td:nth-child(2)").all_inner_texts()]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 5
    seqs = [int(s) for s in page.locator("#pg-timeline tbody tr td:nth-child(1)").all_inner_texts()]
    assert seqs == list(range(len(seqs)))
    ms = [int(s) for s in page.locator("#pg-timeline tbody tr td:nth-child(3)").all_inner_texts()]
    assert ms == sorted(ms) and ms[-1] - ms[0] >= 1000  # 5 words, 0.5 s apart: seen as they came
    final = page.text_content("#pg-json")
    rid = page.text_content("#pg-id")
    assert f'"id": "{rid}"' in final and '"status": "completed"' in final
    # Continue: the next turn chains onto the first with previous_response_id.
    assert page.is_checked("#pg-continue")
    page.select_option("#pg-agent", "main")
    page.fill("#pg-message", "second turn")
    page.click("#pg-send")
    page.wait_for_function(f"() => document.getElementById('pg-id').textContent !== {rid!r} && "
                           "document.getElementById('pg-status').textContent === 'completed'")
    assert f'"previous_response_id": "{rid}"' in page.text_content("#pg-json")
    assert violations == []
    # Both turns went over one WebSocket (opened with a ticket; the second turn reused it).
    assert transport_of(page) == "websocket" and page.text_content("#pg-transport") == "WebSocket"
    assert len(sockets.opened) == 1
    socket = sockets.opened[0]
    assert socket["url"].startswith(console.base.replace("http://", "ws://") + "/v1/responses?ticket=")
    creates = [f for f in socket["sent"] if f["type"] == "response.create"]
    assert [c["input"] for c in creates] == ["tokens arrive one by one", "second turn"]
    assert "previous_response_id" not in creates[0] and creates[1]["previous_response_id"] == rid
    assert all("stream" not in c and "background" not in c for c in creates)
    deltas = [f["delta"] for f in socket["received"] if f["type"] == "response.output_text.delta"]
    assert "".join(deltas[:5]) == "tokens arrive one by one"
    assert not socket["closed"]


def test_a_forced_tool_call_shows_a_card_and_the_output_completes_the_turn(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    sockets = Sockets(page)
    page.goto(f"{console.base}/console/playground")
    page.click("#pg-options summary")
    page.fill("#pg-tools", '[{"type": "function", "name": "get_weather", "parameters": {"type": "object", '
                           '"properties": {"city": {"type": "string"}}, "required": ["city"]}}]')
    page.select_option("#pg-tool-choice", "required")
    page.fill("#pg-message", "Paris")
    page.click("#pg-send")
    card = page.wait_for_selector(".tool-card")
    assert "get_weather" in card.inner_text() and '"city"' in card.inner_text()
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    first = page.text_content("#pg-id")
    page.fill(".tool-output", "sunny and 21 C")
    page.click(".tool-card button")
    page.wait_for_function(f"() => document.getElementById('pg-id').textContent !== {first!r} && "
                           "document.getElementById('pg-status').textContent === 'completed'")
    assert page.locator(".answer").last.text_content() == "sunny and 21 C"
    assert f'"previous_response_id": "{first}"' in page.text_content("#pg-json")
    # The follow-up went over the same WebSocket as a function_call_output on previous_response_id.
    assert transport_of(page) == "websocket" and len(sockets.opened) == 1
    follow_up = [f for f in sockets.opened[0]["sent"] if f["type"] == "response.create"][-1]
    assert follow_up["previous_response_id"] == first
    assert follow_up["input"][0]["type"] == "function_call_output"
    assert follow_up["input"][0]["output"] == "sunny and 21 C"
    assert status_of(console, ALICE_SECRET, page.text_content("#pg-id")) == "completed"


def test_stop_cancels_a_slow_run_over_websocket(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    sockets = Sockets(page)
    page.goto(f"{console.base}/console/playground")
    page.select_option("#pg-agent", "slow")
    page.fill("#pg-message", " ".join(f"word{n}" for n in range(40)))
    page.click("#pg-send")
    page.wait_for_function("() => document.querySelector('.answer') && "
                           "document.querySelector('.answer').textContent.length")
    rid = page.text_content("#pg-id")
    page.click("#pg-stop")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'cancelled'")
    # WebSocket mode has no cancel message: Stop closes the socket, which cancels the turn.
    assert transport_of(page) == "websocket"
    assert wait_for_status(console, ALICE_SECRET, rid, "cancelled") == "cancelled"
    assert sockets.opened[0]["closed"]
    assert "word39" not in page.text_content(".answer")
    # The next message opens a new socket with a new ticket and works.
    page.select_option("#pg-agent", "main")
    page.fill("#pg-message", "after stop")
    page.click("#pg-send")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    assert page.locator(".answer").last.text_content() == "after stop"
    assert len(sockets.opened) == 2 and sockets.opened[0]["url"] != sockets.opened[1]["url"]


def test_a_refused_request_over_websocket_shows_its_error_and_the_socket_stays_usable(
        console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    sockets = Sockets(page)
    page.goto(f"{console.base}/console/playground")
    page.click("#pg-options summary")
    page.fill("#pg-tools", '[{"type": "function", "parameters": {"type": "object"}}]')  # no name
    page.fill("#pg-message", "refused")
    page.click("#pg-send")
    page.wait_for_selector("#pg-error:not([hidden])")
    assert "name" in page.text_content("#pg-error")
    page.wait_for_function("() => !document.getElementById('pg-send').disabled")
    assert page.text_content("#pg-status") == "failed" and page.is_disabled("#pg-stop")
    page.fill("#pg-tools", "")
    page.fill("#pg-message", "accepted")
    page.click("#pg-send")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    assert page.locator(".answer").last.text_content() == "accepted" and page.is_hidden("#pg-error")
    assert len(sockets.opened) == 1 and transport_of(page) == "websocket"
    errors = [f for f in sockets.opened[0]["received"] if f["type"] == "error"]
    assert len(errors) == 1 and errors[0]["status"] == 400


def test_without_websocket_the_playground_streams_and_stops_over_sse(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    sockets = Sockets(page)
    page.route("**/console/api/ws-ticket", lambda route: route.abort())  # the socket cannot be opened
    page.goto(f"{console.base}/console/playground")
    page.select_option("#pg-agent", "slow")
    page.fill("#pg-message", "one two three")
    page.click("#pg-send")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    assert page.text_content(".answer") == "one two three"
    assert transport_of(page) == "sse" and page.text_content("#pg-transport") == "SSE (fallback)"
    assert sockets.opened == []
    types = page.locator("#pg-timeline tbody tr td:nth-child(2)").all_inner_texts()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    # Stop over SSE cancels the background run through POST /v1/responses/{id}/cancel.
    page.fill("#pg-message", " ".join(f"word{n}" for n in range(40)))
    page.click("#pg-send")
    page.wait_for_function("() => document.querySelectorAll('.answer')[1].textContent.length")
    rid = page.text_content("#pg-id")
    page.click("#pg-stop")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'cancelled'")
    assert wait_for_status(console, ALICE_SECRET, rid, "cancelled") == "cancelled"


TRY_SOCKET = """(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); resolve("open"); };
  ws.onclose = (e) => resolve(`refused ${e.code}`);
})"""
GET_TICKET = """() => fetch("/console/api/ws-ticket", {method: "POST", headers: {"X-CSRF-Token":
  document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.json()).then(b => b.ticket)"""


class _AttackerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title><p>another origin"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A page on another port of 127.0.0.1: another origin, yet the same site (the cookie goes along)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_websocket_tickets_refuse_other_origins_reuse_and_expiry_in_the_browser(
        console: Console, context: Any, other_origin: str) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    page.goto(f"{console.base}/console/playground")
    ws_url = console.base.replace("http://", "ws://") + "/v1/responses"
    # The cookie alone opens no socket, even from the console's own page.
    assert page.evaluate(TRY_SOCKET, ws_url) == "refused 1006"
    # Another origin on the same site: the browser sends the session cookie, and even holding a
    # valid ticket of this session the upgrade is refused (its Origin is not the gateway).
    ticket = page.evaluate(GET_TICKET)
    attacker = context.new_page()
    attacker.goto(other_origin)
    assert attacker.evaluate(TRY_SOCKET, f"{ws_url}?ticket={ticket}") == "refused 1006"
    # That refusal did not spend it: the console page opens the socket with it, once.
    assert page.evaluate(TRY_SOCKET, f"{ws_url}?ticket={ticket}") == "open"
    assert page.evaluate(TRY_SOCKET, f"{ws_url}?ticket={ticket}") == "refused 1006"
    # A cross-origin page cannot get a ticket of its own: no CSRF token to send, and no CORS read.
    grabbed = attacker.evaluate(f"""() => fetch("{console.base}/console/api/ws-ticket", {{method: "POST",
        credentials: "include"}}).then(r => "status " + r.status, e => "blocked")""")
    assert grabbed in ("blocked", "status 403"), grabbed
    # An expired ticket (websocket_ticket_seconds = 3 here) is refused.
    stale = page.evaluate(GET_TICKET)
    time.sleep(3.5)
    assert page.evaluate(TRY_SOCKET, f"{ws_url}?ticket={stale}") == "refused 1006"
    assert page.evaluate(TRY_SOCKET, f"{ws_url}?ticket={page.evaluate(GET_TICKET)}") == "open"


def test_responses_list_detail_and_delete(console: Console, context: Any) -> None:
    with console.client(ALICE_SECRET) as alice:
        rid = alice.post("/v1/responses", json={"model": "main", "input": "kept for the list", "stream": True}).text
        rid = next(line for line in rid.splitlines() if '"response.created"' in line).split('"id":"', 1)[1][:37]
    page = sign_in(context, console, ALICE_SECRET)
    page.goto(f"{console.base}/console/responses")
    row = page.wait_for_selector(f"#rs-table tr[data-id='{rid}']")
    assert "completed" in row.inner_text() and "kept for the list" in row.inner_text()
    page.click(f"#rs-table tr[data-id='{rid}'] a")
    page.wait_for_url(f"{console.base}/console/responses/{rid}")
    page.wait_for_selector("#rd-timeline tbody tr")
    assert page.text_content("#rd-status") == "completed"
    assert "kept for the list" in page.inner_text("#rd-input")
    assert "kept for the list" in page.inner_text("#rd-output")
    timeline = page.locator("#rd-timeline tbody tr td:nth-child(2)").all_inner_texts()
    assert timeline[0] == "response.created" and timeline[-1] == "response.completed"
    facts = page.inner_text("#rd-facts")
    assert "alice" in facts and "output tokens" in facts
    page.on("dialog", lambda d: d.accept())
    page.click("#rd-delete")
    page.wait_for_url(f"{console.base}/console/responses")
    page.wait_for_selector("#rs-table tbody tr, #rs-empty:not([hidden])")
    assert page.query_selector(f"#rs-table tr[data-id='{rid}']") is None
    with console.client(ALICE_SECRET) as alice:
        assert alice.get(f"/v1/responses/{rid}").status_code == 404


def test_live_runs_shows_a_background_run_and_cancels_it(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    page.goto(f"{console.base}/console/runs")
    with console.client(ALICE_SECRET) as alice:
        rid = alice.post("/v1/responses", json={"model": "slow", "input": " ".join(["go"] * 40),
                                                "background": True}).json()["id"]
    row = page.wait_for_selector("#lr-table tbody tr")
    text = row.inner_text()
    assert "slow" in text and "alice" in text and "background" in text
    page.wait_for_function("() => Number(document.querySelector('#lr-table tbody tr .tokens').textContent) >= 2")
    page.click("#lr-table tbody tr button")
    page.wait_for_selector("#lr-empty:not([hidden])")
    deadline = time.monotonic() + 10
    while status_of(console, ALICE_SECRET, rid) != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status_of(console, ALICE_SECRET, rid) == "cancelled"


def test_another_key_sees_none_of_the_first_keys_responses(console: Console, context: Any) -> None:
    with console.client(ALICE_SECRET) as alice:
        rid = alice.post("/v1/responses", json={"model": "main", "input": "alice private note"}).json()["id"]
    page = sign_in(context, console, BOB_SECRET)
    page.goto(f"{console.base}/console/responses")
    page.wait_for_selector("#rs-empty:not([hidden]), #rs-table tbody tr")
    assert "alice private note" not in page.inner_text("main")
    assert page.query_selector(f"#rs-table tr[data-id='{rid}']") is None
    page.goto(f"{console.base}/console/responses/{rid}")
    page.wait_for_selector("#rd-error:not([hidden])")
    assert "was not found" in page.text_content("#rd-error")
    assert "alice private note" not in page.inner_text("main")
    # The same through the listing endpoint, with bob's cookie (from the page) and with his key.
    listed = page.evaluate("fetch('/-/responses').then(r => r.json())")
    assert rid not in [r["id"] for r in listed["data"]]
    with console.client(BOB_SECRET) as bob:
        assert rid not in [r["id"] for r in bob.get("/-/responses").json()["data"]]
        assert bob.get(f"/-/responses/{rid}").status_code == 404
    # The admin sees it, with its owner.
    with console.client() as admin:
        rows = {r["id"]: r for r in admin.get("/-/responses", params={"limit": 100}).json()["data"]}
        assert rows[rid]["owner"] == "alice"


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script><b>bold?</b>'


def test_an_xss_payload_in_a_model_answer_renders_as_text(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    page.goto(f"{console.base}/console/playground")
    page.fill("#pg-message", XSS)
    page.click("#pg-send")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    assert page.locator(".answer").last.text_content() == XSS
    assert page.evaluate("window.__xss") is None
    assert page.query_selector("#pg-transcript img, #pg-transcript script, #pg-transcript b") is None
    rid = page.text_content("#pg-id")
    for path in ("/console/responses", f"/console/responses/{rid}"):
        page.goto(f"{console.base}{path}")
        page.wait_for_selector("#rs-table tbody tr, #rd-output .item")
        assert XSS in page.inner_text("main")
        assert page.query_selector("main img, main b") is None
        assert page.evaluate("window.__xss") is None


def test_a_post_without_the_csrf_token_is_refused_in_the_browser(console: Console, context: Any) -> None:
    page = sign_in(context, console, ALICE_SECRET)
    script = """async (withToken) => {
      const headers = {"Content-Type": "application/json"};
      if (withToken) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
      const r = await fetch("/v1/responses", {method: "POST", headers,
                                              body: JSON.stringify({model: "main", input: "csrf probe"})});
      return [r.status, await r.json()];
    }"""
    status, body = page.evaluate(script, False)
    assert status == 403 and body["error"]["code"] == "csrf_failed"
    status, body = page.evaluate(script, True)
    assert status == 200 and body["output"][0]["content"][0]["text"] == "csrf probe"
    # The cookie is invisible to scripts.
    assert "kernel_console" not in page.evaluate("document.cookie")


def test_usage_page_says_it_needs_the_observability_plugin(console: Console, context: Any) -> None:
    page = sign_in(context, console, TEST_TOKEN)
    page.goto(f"{console.base}/console/usage")
    page.wait_for_selector("#us-notice:not([hidden])")
    assert "observability" in page.text_content("#us-notice")
    assert httpx.get(f"{console.base}/-/usage", headers={"Authorization": f"Bearer {TEST_TOKEN}"}).status_code == 404


def test_usage_page_draws_charts_from_the_observability_ledger(context: Any, tmp_path: Any) -> None:
    from kernel.testing import build_app, default_config, merge, serve_in_thread

    from .conftest import CONSOLE_CONFIG

    config = merge(default_config(tmp_path / "state"), CONSOLE_CONFIG)
    config = merge(config, {"agents": {"slow": {"provider": "echo"}},
                            "kernel": {"auth": {"keys": {"alice": {"secret": "alice-secret-0123456789"}}}},
                            "plugins": {"observability": {"enabled": True}}})
    app = build_app(config, tmp_path / "plugins.toml")
    with serve_in_thread(app) as base:
        for agent, secret in (("main", TEST_TOKEN), ("slow", "alice-secret-0123456789")):
            answer = httpx.post(f"{base}/v1/responses", headers={"Authorization": f"Bearer {secret}"},
                                json={"model": f"agent:{agent}", "input": "count these words please"})
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 10  # the ledger writes in batches, about once a second
        while time.monotonic() < deadline:
            ledger = httpx.get(f"{base}/-/usage?group_by=agent", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
            if len(ledger.json()["data"]) == 2:
                break
            time.sleep(0.2)
        page = context.new_page()
        violations = watch_csp(page)
        page.goto(f"{base}/console/login")
        page.fill("#secret", TEST_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/console/")
        page.goto(f"{base}/console/usage")
        page.wait_for_function("() => document.querySelectorAll('#us-charts .uplot').length === 2")
        titles = page.locator("#us-charts h2").all_inner_texts()
        assert titles == ["Tokens per key", "Requests per key", "Per agent (the whole period)"]
        text = page.inner_text("#us-charts")
        assert "main" in text and "slow" in text and "alice" in text and "default" in text
        assert page.is_hidden("#us-notice") and violations == []
