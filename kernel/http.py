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
    # Valid JSON that would only fail deeper down (as a 500) is refused here as a 400.
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply to parse", code="invalid_json") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ApiError(400, f"request body is not usable JSON: {exc}", code="invalid_json") from None
    bad = lone_surrogate_path(data)
    if bad is not None:
        # "\ud800" parses into a str that no UTF-8 encoder (response body, SQLite) can write.
        raise ApiError(400, f"invalid value for '{bad or 'body'}': the string contains a lone UTF-16 "
                       "surrogate escape (e.g. \\ud800 without its pair), which is not valid Unicode",
                       param=bad or None, code="invalid_value")
    if require_object and not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return data


def lone_surrogate_path(data: Any) -> str | None:
    """The field path of a string holding a lone surrogate (or of the object whose key does), else None.

    Iterative, and ASCII strings (nearly all) are skipped by ``str.isascii``, a C scan,
    so a large inline file costs little.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and not _encodable(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and not _encodable(key):
                    return path  # the key itself cannot be shown: name the object holding it
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
