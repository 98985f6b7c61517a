"""Request-body helpers shared by every endpoint plugin: size limits, content type, JSON."""

from __future__ import annotations

import json
from typing import Any

from quart import request

from kernel.errors import ApiError

CHUNK_LIMIT_MESSAGE = "request body is larger than the {limit}-byte limit for this endpoint"
# The unread rest of the body makes the connection unusable: tell the client not to reuse it,
# or its next request on the pooled connection fails with "server disconnected".
_TOO_LARGE_HEADERS = {"Connection": "close"}


async def read_body(max_bytes: int) -> bytes:
    """Read the body, answering 413 as soon as it exceeds ``max_bytes`` (never buffering more)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, CHUNK_LIMIT_MESSAGE.format(limit=max_bytes), code="request_too_large",
                       headers=dict(_TOO_LARGE_HEADERS))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, CHUNK_LIMIT_MESSAGE.format(limit=max_bytes), code="request_too_large",
                           headers=dict(_TOO_LARGE_HEADERS))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(max_bytes: int, *, require_object: bool = True, body: bytes | None = None) -> Any:
    """Parse a JSON body: 415 unless ``application/json``, 413 past the limit, 400 if malformed.

    ``body`` is the already-read body, for endpoints that need the raw bytes too
    (signature checks); otherwise the body is read here within ``max_bytes``.
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
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="invalid_json",
        ) from None
    if require_object and not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return data
