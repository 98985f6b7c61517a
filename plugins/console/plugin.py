"""Hook implementations of the console plugin."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from quart import Blueprint
from werkzeug.http import parse_cookie

from kernel import ApiError, hookimpl
from plugins.console.routes import blueprint
from plugins.console.session import COOKIE_NAME, CSRF_HEADER, SAFE_METHODS, Sessions, load_or_create_key
from plugins.console.settings import ConsoleSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel

# One session signer per kernel (tests build several apps in one process).
_SESSIONS: weakref.WeakKeyDictionary[Kernel, Sessions] = weakref.WeakKeyDictionary()


@hookimpl
def register_settings() -> type[BaseModel]:
    return ConsoleSettings


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    opts = settings if isinstance(settings, ConsoleSettings) else ConsoleSettings()
    sessions = _SESSIONS[kernel] = Sessions(load_or_create_key(kernel.state_dir), int(opts.session_hours * 3600),
                                            kernel.auth.secret_for)
    return [blueprint(kernel, opts, sessions)]


@hookimpl
def authenticate_request(kernel: Kernel, headers: Any, method: str, websocket: bool) -> str | None:
    """A console session cookie authenticates like the secret it was opened with.

    State-changing requests must also carry the session's CSRF token (and, when the
    browser sends an ``Origin``, come from this host). WebSockets are never opened on
    a cookie: a cross-site page could start one, and it carries no CSRF header.
    """
    sessions = _SESSIONS.get(kernel)
    raw = headers.get("cookie")
    if sessions is None or websocket or not raw:
        return None
    session = sessions.verify(parse_cookie(raw).get(COOKIE_NAME))
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
