"""WebSocket tickets on the wire: who may open /v1/responses in WebSocket mode with a console session."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from kernel.testing import TEST_TOKEN
from plugins.console.session import COOKIE_NAME, Session
from plugins.console.tickets import TicketRefused, Tickets

from .conftest import ALICE_SECRET, BOB_SECRET, Console
from .test_security import csrf_of


class Browserish:
    """A signed-in cookie client that asks for tickets the way the playground does."""

    def __init__(self, console: Console, secret: str) -> None:
        self.console = console
        self.http = console.sign_in(secret)
        self.csrf = csrf_of(self.http.get("/console/playground"))
        self.cookie = f"{COOKIE_NAME}={self.http.cookies[COOKIE_NAME]}"
        self.origin = console.base

    def ticket(self) -> str:
        grant = self.http.post("/console/api/ws-ticket", headers={"X-CSRF-Token": self.csrf, "Origin": self.origin})
        assert grant.status_code == 200, grant.text
        body = grant.json()
        assert body["path"] == "/v1/responses" and body["param"] == "ticket" and body["expires_in"] == 3
        assert grant.headers["cache-control"] == "no-store"
        return body["ticket"]

    def open(self, ticket: str | None, *, origin: str | None = "self", cookie: str | None = "self") -> ClientConnection:
        url = self.console.base.replace("http://", "ws://") + "/v1/responses"
        if ticket is not None:
            url += f"?ticket={ticket}"
        headers = {"Cookie": self.cookie if cookie == "self" else cookie} if cookie else {}
        return connect(url, additional_headers=headers, origin=self.origin if origin == "self" else origin,
                       open_timeout=10)


def refused(opening: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        opening().close()
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


def test_a_ticket_opens_one_socket_that_runs_turns_as_its_principal(console: Console) -> None:
    alice = Browserish(console, ALICE_SECRET)
    with alice.open(alice.ticket()) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "agent:main", "input": "over the socket"}))
        events = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(json.loads(ws.recv(timeout=10)))
    rid = events[-1]["response"]["id"]
    with console.client(ALICE_SECRET) as http:  # stored under alice, like any of her requests
        assert http.get(f"/v1/responses/{rid}").json()["status"] == "completed"
    with console.client(BOB_SECRET) as http:
        assert http.get(f"/v1/responses/{rid}").status_code == 404


def test_a_reused_or_expired_ticket_is_refused(console: Console) -> None:
    alice = Browserish(console, ALICE_SECRET)
    ticket = alice.ticket()
    alice.open(ticket).close()
    status, body = refused(lambda: alice.open(ticket))
    assert status == 403 and body["error"]["code"] == "websocket_ticket_refused"
    assert "already used" in body["error"]["message"] and ticket not in body["error"]["message"]
    stale = alice.ticket()
    time.sleep(3.5)  # websocket_ticket_seconds = 3 in this module's server
    status, body = refused(lambda: alice.open(stale))
    assert status == 403 and "expired" in body["error"]["message"]


def test_a_foreign_origin_a_missing_cookie_or_another_session_is_refused(console: Console) -> None:
    alice, bob = Browserish(console, ALICE_SECRET), Browserish(console, BOB_SECRET)
    ticket = alice.ticket()
    status, body = refused(lambda: alice.open(ticket, origin="http://evil.example"))
    assert status == 403 and body["error"]["code"] == "websocket_origin_refused"
    status, body = refused(lambda: alice.open(ticket, origin=None))  # browsers always send one
    assert status == 403 and body["error"]["code"] == "websocket_origin_refused"
    # A ticket alone (no cookie, as from a cross-site page) or the cookie alone opens nothing.
    assert refused(lambda: alice.open(ticket, cookie=None))[0] == 401
    assert refused(lambda: alice.open(None))[0] == 401
    # Alice's ticket with bob's cookie: bound to another session.
    status, body = refused(lambda: alice.open(ticket, cookie=bob.cookie))
    assert status == 403 and "another session" in body["error"]["message"]
    # A forged ticket.
    status, body = refused(lambda: alice.open(ticket[:-3] + "abc"))
    assert status == 403 and "not valid" in body["error"]["message"]
    # None of these consumed it: the real page, with its own origin and cookie, still gets in.
    alice.open(ticket).close()
    # A bearer client needs no ticket, and gets none.
    with console.client(TEST_TOKEN) as http:
        answer = http.post("/console/api/ws-ticket")
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "not_a_console_session"


def test_a_ticket_needs_the_csrf_token_of_the_session(console: Console) -> None:
    alice = Browserish(console, ALICE_SECRET)
    bare = alice.http.post("/console/api/ws-ticket")
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_failed"
    cross = alice.http.post("/console/api/ws-ticket", headers={"X-CSRF-Token": alice.csrf,
                                                                "Origin": "http://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "csrf_failed"
    assert httpx.post(f"{console.base}/console/api/ws-ticket").status_code == 401


def test_tickets_never_reach_the_access_log(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    console.kernel.settings.kernel.access_log = True
    try:
        alice = Browserish(console, ALICE_SECRET)
        with caplog.at_level(logging.DEBUG):
            ticket = alice.ticket()
            alice.open(ticket).close()
            refused(lambda: alice.open(ticket))
    finally:
        console.kernel.settings.kernel.access_log = False
    # Everything the server side logged, at every level (the test's own clients log the URL they send).
    server = [r for r in caplog.records if not r.name.startswith(("websockets.client", "httpx", "httpcore"))]
    assert any("/console/api/ws-ticket" in r.getMessage() for r in server)  # the access log did run
    assert not any(ticket in r.getMessage() for r in server)


def test_ticket_book_binds_expires_and_forgets() -> None:
    now = [1000.0]
    book = Tickets(b"k" * 32, 5, clock=lambda: now[0])
    mine, other = Session("alice", "csrf-one"), Session("alice", "csrf-two")
    ticket = book.issue(mine)
    with pytest.raises(TicketRefused, match="another session"):
        book.redeem(ticket, other)  # same principal, other sign-in
    assert book.redeem(ticket, mine) == "alice"
    with pytest.raises(TicketRefused, match="already used"):
        book.redeem(ticket, mine)
    assert len(book._used) == 1
    now[0] += 5
    book.issue(mine)  # an expired nonce is forgotten on the next call
    assert book._used == {}
    late = book.issue(mine)
    now[0] += 5.01
    with pytest.raises(TicketRefused, match="expired"):
        book.redeem(late, mine)
