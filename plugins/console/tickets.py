"""WebSocket tickets: how a signed-in page opens ``/v1/responses`` in WebSocket mode.

A browser cannot set headers on a WebSocket upgrade, and the session cookie alone must
never open a socket: any site can start a WebSocket to this host, and the upgrade
carries no CSRF header. So the page first asks for a ticket with an ordinary
state-changing request (cookie + ``X-CSRF-Token``), then opens the socket with the
ticket in the URL's query. A ticket is

* **signed** with the console's cookie key (itsdangerous) and **expires** within
  ``websocket_ticket_seconds`` (float expiry inside the signed payload);
* **bound** to its session: it names the principal and an HMAC of the session's CSRF
  token, and is accepted only together with the same session cookie;
* **single-use**: its nonce is remembered until it expires, and a second upgrade with
  it is refused;
* accepted only on WebSocket upgrades whose ``Origin`` is this gateway.

Query strings are never logged (the kernel's access line and observers carry the path
only; Hypercorn's own access log is off), and a ticket is worthless after one use or a
few seconds anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeSerializer

from plugins.console.session import Session

TICKET_PARAM = "ticket"
MAX_TICKET_CHARS = 512
# Redeemed nonces kept at most (each for a ticket's lifetime); beyond it, issuing waits.
MAX_OUTSTANDING = 10_000


class TicketRefused(Exception):
    """Why a ticket was not accepted (the message is safe to show: it never echoes the ticket)."""


@dataclass
class Tickets:
    """Issues and redeems WebSocket tickets for one kernel's console sessions."""

    key: bytes
    ttl_seconds: float
    clock: Callable[[], float] = time.time
    _used: dict[str, float] = field(default_factory=dict)  # nonce -> expiry

    def __post_init__(self) -> None:
        self._serializer = URLSafeSerializer(self.key, salt="agentkernel console websocket ticket v1")

    def _binding(self, session: Session) -> str:
        # An HMAC of the CSRF token, not the token: a ticket's payload is signed, not encrypted.
        return hmac.new(self.key, b"ticket-csrf\x00" + session.csrf.encode(), hashlib.sha256).hexdigest()

    def _forget_expired(self) -> None:
        now = self.clock()
        for nonce in [n for n, expiry in self._used.items() if expiry <= now]:
            del self._used[nonce]

    def issue(self, session: Session) -> str:
        """A fresh ticket for this session (raises TicketRefused when too many are outstanding)."""
        self._forget_expired()
        if len(self._used) >= MAX_OUTSTANDING:
            raise TicketRefused("too many WebSocket tickets were redeemed in the last seconds; try again shortly")
        return self._serializer.dumps({"p": session.principal, "n": secrets.token_hex(16),
                                       "b": self._binding(session), "e": self.clock() + self.ttl_seconds})

    def redeem(self, ticket: str, session: Session) -> str:
        """The principal a ticket admits, consuming it; raises TicketRefused with the reason."""
        if not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise TicketRefused("the WebSocket ticket is malformed")
        try:
            data = self._serializer.loads(ticket)
        except BadSignature:
            raise TicketRefused("the WebSocket ticket is not valid") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("p", "n", "b")) \
                or not isinstance(data.get("e"), (int, float)):
            raise TicketRefused("the WebSocket ticket is not valid")
        if data["p"] != session.principal or not hmac.compare_digest(data["b"], self._binding(session)):
            raise TicketRefused("the WebSocket ticket belongs to another session")
        self._forget_expired()
        if self.clock() >= data["e"]:
            raise TicketRefused("the WebSocket ticket has expired; ask for a new one")
        if data["n"] in self._used:
            raise TicketRefused("the WebSocket ticket was already used; ask for a new one")
        self._used[data["n"]] = data["e"]
        return session.principal
