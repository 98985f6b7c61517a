"""Request-body helpers shared by every endpoint plugin: size limits, content type, JSON."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from quart import current_app, g, request

from kernel.errors import ApiError

T = TypeVar("T")

CHUNK_LIMIT_MESSAGE = "request body is larger than the {limit}-byte limit for this endpoint"
# Before an error answer (413, 401, 404 ...) the kernel reads and drops the unread rest of
# a request body up to this size, for at most DRAIN_SECONDS. Answering and closing while
# the client is still sending makes the client's TCP stack see a reset, and most clients
# (urllib, requests, curl) then report "broken pipe" instead of the error body. Loopback
# and LAN uploads of this size drain in well under a second; larger bodies (or slower
# senders) get the answer at once with ``Connection: close``.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0
# A body refused as too large is drained up to this many times the route's limit (at
# least DRAIN_LIMIT_BYTES), so a client that sent "a bit too much" (the openai SDK with a
# 21 MiB body against a 20 MiB limit) reads the 413 instead of a reset it would retry.
# Safe: chunks are dropped as they arrive (no memory held), DRAIN_SECONDS bounds the
# time, and the client pays for every byte it uploads; past the bound the connection closes.
DRAIN_LIMIT_FACTOR = 5
# Bodies above this are parsed and validated in a worker thread (see read_json, for_body).
LARGE_BODY_BYTES = 256 * 1024


def default_body_limit() -> int:
    """``[kernel] max_body_bytes``: the limit for routes that do not set their own."""
    return current_app.extensions["kernel"].settings.kernel.max_body_bytes


async def read_body(max_bytes: int | None = None) -> bytes:
    """Read the body, answering 413 as soon as it exceeds ``max_bytes`` (never buffering more).

    ``None`` means the gateway-wide default, :func:`default_body_limit`. The unread rest
    of an oversized body is drained (and dropped) by the app before the 413 goes out;
    see :func:`drain_unread_body`.
    """
    if max_bytes is None:
        max_bytes = default_body_limit()
    declared = declared_length()
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    seconds = body_timeout()
    try:
        # A total deadline, not one per chunk: a client dripping a byte now and then must
        # not hold a request (and its connection) open for as long as it likes.
        async with asyncio.timeout(seconds):
            async for chunk in request.body:
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        g.kernel_body_abandoned = True  # the rest is not worth waiting for: close the connection
        raise ApiError(408, f"the request body did not arrive within {seconds:g} s "
                            "([kernel] body_timeout_seconds)", code="request_timeout") from None
    g.kernel_body_read = True  # nothing left for drain_unread_body to do
    g.kernel_body_size = size
    return b"".join(chunks)


def body_timeout() -> float:
    return float(current_app.extensions["kernel"].settings.kernel.body_timeout_seconds)


def _too_large(max_bytes: int) -> ApiError:
    g.kernel_body_limit = max_bytes  # sizes the drain (drain_limit)
    return ApiError(413, CHUNK_LIMIT_MESSAGE.format(limit=max_bytes), code="request_too_large")


def declared_length() -> int | None:
    """The request's ``Content-Length`` as an int, or None (chunked, or none sent)."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


def drain_limit() -> int:
    """How much of an unread body is worth draining: scaled with the limit it broke."""
    return max(DRAIN_LIMIT_BYTES, DRAIN_LIMIT_FACTOR * int(g.get("kernel_body_limit") or 0))


async def drain_unread_body(limit: int | None = None, seconds: float = DRAIN_SECONDS) -> bool:
    """Read and drop whatever the view left unread of the request body; True when it all was.

    Called by the app after every view, so an early answer (413 from :func:`read_body`,
    401 before the body was looked at, 404, 405 ...) reaches a client that is still
    sending. False means the rest was too large or too slow to wait for: the connection
    must then be closed (``Connection: close``), as it holds unread bytes. Chunks are
    dropped as they come: draining never buffers the body.
    """
    if g.get("kernel_body_read"):
        return True  # read_body took it all (every JSON endpoint): no await on the hot path
    if g.get("kernel_body_abandoned"):
        return False
    if limit is None:
        limit = drain_limit()
    declared = declared_length()
    if declared == 0 or (declared is None and "transfer-encoding" not in request.headers):
        return True  # no body at all
    if declared is not None and declared > limit:
        # Not worth waiting for. (A view that read a body this large by other means than
        # read_body also lands here: its connection closes, which costs only a reconnect.)
        return False
    drained = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.body:
                drained += len(chunk)
                if drained > limit:
                    return False
    except TimeoutError:
        return False
    return True


async def read_json(max_bytes: int | None = None, *, require_object: bool = True,
                    body: bytes | None = None) -> Any:
    """Parse a JSON body: 415 unless ``application/json``, 413 past the limit, 400 if malformed.

    ``body`` is the already-read body, for endpoints that need the raw bytes too
    (signature checks); otherwise the body is read here within ``max_bytes`` (``None``:
    the gateway-wide ``[kernel] max_body_bytes``).
    """
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
        raise ApiError(
            415,
            f"unsupported content type {mime or '(none)'!r}; send the body as application/json",
            code="unsupported_media_type",
        )
    raw = body if body is not None else await read_body(max_bytes)
    if not raw.strip():
        raise ApiError(400, "request body is empty; expected a JSON object", code="invalid_json")
    # A large body is decoded and checked in a worker thread: json.loads and the walk
    # below hold the GIL, but a thread is preempted every few milliseconds
    # (sys.getswitchinterval), so other requests keep being served while it works.
    data = await asyncio.to_thread(decode_json, raw) if len(raw) > LARGE_BODY_BYTES else decode_json(raw)
    if require_object and not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return data


def decode_json(raw: bytes | str, what: str = "request body") -> Any:
    """JSON text -> value, every problem a 400 naming ``what`` (see :func:`read_json`).

    The one decoder for JSON a client sends, whatever the transport (HTTP bodies,
    WebSocket messages): same limits, same errors.
    """
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, f"{what} is not valid UTF-8", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="invalid_json",
        ) from None
    # Valid JSON that would only fail deeper down (as a 500) is refused here as a 400.
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply to parse", code="invalid_json") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ApiError(400, f"{what} is not usable JSON: {exc}", code="invalid_json") from None
    problem = unstorable_value(data)
    if problem is not None:
        path, message = problem
        raise ApiError(400, f"invalid value for '{path or what}': {message}", param=path or None,
                       code="invalid_value")
    return data


async def for_body(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)``, in a worker thread when this request's body was large (see LARGE_BODY_BYTES).

    For endpoint plugins: validation of a big body (100,000 input items) takes seconds,
    which must not hold every other request. Small bodies run inline: a thread hop
    costs more than they do.
    """
    if int(g.get("kernel_body_size") or 0) > LARGE_BODY_BYTES:
        return await asyncio.to_thread(func, *args)
    return func(*args)


# Deeper than any real request needs (a JSON Schema of a dozen levels is already rare),
# and far below what the decoders reading a stored record back can handle: whatever is
# accepted here can always be decoded again (at startup recovery, on GET).
MAX_JSON_DEPTH = 64


def unstorable_value(data: Any) -> tuple[str, str] | None:
    """The first value that could not be stored and read back: ``(field path, why)``, else None.

    One iterative walk for every JSON body: nesting beyond :data:`MAX_JSON_DEPTH`,
    ``NaN``/``Infinity`` (Python's decoder accepts them; they are not JSON and would be
    echoed back as invalid JSON), and lone surrogates (``"\\ud800"`` parses into a str no
    UTF-8 encoder can write). ASCII strings, nearly all, are skipped by a C scan.
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and not _encodable(value):
                return path, _SURROGATE
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path, f"{value!r} is not a JSON number (NaN and Infinity are not allowed)"
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return path, f"nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(value, dict):
                for key, item in value.items():
                    if not key.isascii() and not _encodable(key):
                        return path, _SURROGATE  # the key itself cannot be shown: name its object
                    stack.append((f"{path}.{key}" if path else key, item, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))
    return None


_SURROGATE = ("the string contains a lone UTF-16 surrogate escape (e.g. \\ud800 without its pair), "
              "which is not valid Unicode")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
