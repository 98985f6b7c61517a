"""What every hook request passes before anything runs: its own secret, and a bounded body.

The hook token is separate from the gateway's secret (the views are ``kernel.public``).
It travels in ``Authorization: Bearer`` or ``X-Hook-Token``; senders that cannot set
headers but can sign (GitHub) may instead send ``X-Hub-Signature-256``, an HMAC-SHA256
of the body keyed with the token. A token in the URL is refused outright: URLs end up
in access logs, proxies and browser history.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from quart import request

from kernel.auth import bearer_token, constant_time_equals
from kernel.errors import ApiError
from kernel.http import read_body

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

TOKEN_HEADER = "x-hook-token"
SIGNATURE_HEADER = "x-hub-signature-256"
# Query parameters that look like someone put a secret in the URL.
QUERY_TOKEN_NAMES = frozenset({
    "token", "hook_token", "hooktoken", "x-hook-token", "access_token", "api_key", "apikey", "secret",
    "authorization",
})


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_hook_token", headers={"WWW-Authenticate": 'Bearer realm="hooks"'})


def _token_param(args: MultiDict[str, str], token: str) -> str | None:
    """The query parameter that carries (or is named like) the token, if any."""
    for name in args:
        if constant_time_equals(name, token):
            return "(the token itself)"  # never echo the secret back
        if name.lower() in QUERY_TOKEN_NAMES or any(constant_time_equals(v, token) for v in args.getlist(name)):
            return name
    return None


def reject_token_in_query(args: MultiDict[str, str], token: str) -> None:
    """400 when the query string carries something named like a token, or the token itself.

    The value check catches the secret under any name (``?key=<token>``, or a bare
    ``?<token>``); each comparison is constant-time and the answer never quotes a value.
    """
    name = _token_param(args, token)
    if name is not None:
        raise ApiError(
            400,
            f"do not send the hook token in the URL (query parameter {name!r}): URLs are logged. "
            "Send it in a header instead: 'Authorization: Bearer <token>' or 'X-Hook-Token: <token>'",
            param=name, code="token_in_query",
        )


def given_token(headers: Mapping[str, str]) -> str | None:
    """The secret from ``X-Hook-Token`` or ``Authorization: Bearer`` (in that order)."""
    value = headers.get(TOKEN_HEADER)
    if value is not None and value.strip():
        return value.strip()
    return bearer_token(headers.get("authorization"))


def signature_for(token: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return "sha256=" + hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def authenticate(token: str, *, max_body_bytes: int, allow_signature: bool = True) -> bytes | None:
    """Check the request's secret; return the body if checking it meant reading it.

    Raises 401 (missing or wrong secret) before the body is read whenever a header
    token was sent; a signed request's body is read (bounded) to verify it.
    """
    reject_token_in_query(request.args, token)
    given = given_token(request.headers)
    if given is not None:
        if constant_time_equals(given, token):
            return None
        raise _unauthorized("invalid hook token")
    signature = request.headers.get(SIGNATURE_HEADER)
    if allow_signature and signature:
        body = await read_body(max_body_bytes)
        if constant_time_equals(signature.strip(), signature_for(token, body)):
            return body
        raise _unauthorized(f"{SIGNATURE_HEADER} does not match the body signed with the hook token")
    raise _unauthorized(
        "missing hook token; send 'Authorization: Bearer <token>' or 'X-Hook-Token: <token>'"
    )
