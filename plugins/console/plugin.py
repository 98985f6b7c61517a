"""Hook implementations of the console plugin."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from quart import Blueprint
from werkzeug.http import parse_cookie

from kernel import ApiError, hookimpl
from plugins.console.routes import blueprint
from plugins.console.session import COOKIE_NAME, CSRF_HEADER, SAFE_METHODS, Session, Sessions, load_or_create_key
from plugins.console.settings import ConsoleSettings
from plugins.console.tickets import TICKET_PARAM, TicketRefused, Tickets

if TYPE_CHECKING:
    from kernel.runtime import Kernel

# One session signer and ticket book per kernel (tests build several apps in one process).
_SESSIONS: weakref.WeakKeyDictionary[Kernel, Sessions] = weakref.WeakKeyDictionary()
_TICKETS: weakref.WeakKeyDictionary[Kernel, Tickets] = weakref.WeakKeyDictionary()


@hookimpl
def register_settings() -> type[BaseModel]:
    return ConsoleSettings


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    opts = settings if isinstance(settings, ConsoleSettings) else ConsoleSettings()
    key = load_or_create_key(kernel.state_dir)
    sessions = _SESSIONS[kernel] = Sessions(key, int(opts.session_hours * 3600), kernel.auth.secret_for)
    tickets = _TICKETS[kernel] = Tickets(key, opts.websocket_ticket_seconds)
    return [blueprint(kernel, opts, sessions, tickets)]


@hookimpl
def authenticate_request(kernel: Kernel, headers: Any, method: str, websocket: bool,
                         query: Mapping[str, str]) -> str | None:
    """A console session cookie authenticates like the secret it was opened with.

    State-changing requests must also carry the session's CSRF token (and, when the
    browser sends an ``Origin``, come from this host). A cookie alone never opens a
    WebSocket (a cross-site page could start one, and it carries no CSRF header): an
    upgrade needs the cookie, a single-use ticket of the same session in its query
    (issued by ``POST /console/api/ws-ticket``, which needs the CSRF token) and an
    ``Origin`` that is this gateway.
    """
    sessions = _SESSIONS.get(kernel)
    raw = headers.get("cookie")
    if sessions is None or not raw:
        return None
    session = sessions.verify(parse_cookie(raw).get(COOKIE_NAME))
    if websocket:
        return _websocket_principal(kernel, headers, query, session)
    if session is None:
        return None
    if method.upper() not in SAFE_METHODS:
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != headers.get("host"):
            raise ApiError(403, f"cross-origin request refused: Origin {origin!r} is not this gateway",
                           code="csrf_failed")
        if not Sessions.csrf_matches(session, headers.get(CSRF_HEADER)):
            raise ApiError(403, "missing or wrong CSRF token: a browser session must send its page's token in "
                           "the X-CSRF-Token header on every state-changing request", code="csrf_failed")
    return session.principal


def _websocket_principal(kernel: Kernel, headers: Any, query: Mapping[str, str], session: Session | None) -> str | None:
    ticket = query.get(TICKET_PARAM)
    tickets = _TICKETS.get(kernel)
    if ticket is None or tickets is None:
        return None  # a cookie alone opens no socket: 401 as without any credential
    origin = headers.get("origin")
    if origin is None or urlsplit(origin).netloc != headers.get("host"):
        raise ApiError(403, "WebSocket refused: a console ticket is accepted only from a page of this gateway "
                       f"(Origin {origin!r})", code="websocket_origin_refused")
    if session is None:
        raise ApiError(401, "WebSocket refused: a console ticket needs the signed-in session it was issued to",
                       code="websocket_ticket_refused", headers={"WWW-Authenticate": 'Bearer realm="kernel"'})
    try:
        return tickets.redeem(ticket, session)
    except TicketRefused as exc:
        raise ApiError(403, f"WebSocket refused: {exc}", code="websocket_ticket_refused") from None
