"""Upstream failures -> :class:`kernel.RunError` values a person can act on.

Every message names the provider instance and the upstream host (never the path,
the key or a request body) and says what happened.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from kernel import RunError
from kernel.types import bounded_retry_after

# Upstream answers worth retrying when they arrive before any body bytes.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Upstream 4xx answers that describe the client's own request: their status reaches
# the client unchanged so it can fix the request.
PASS_THROUGH_STATUSES = frozenset({400, 404, 413, 422})
MAX_UPSTREAM_MESSAGE = 500


def upstream_error_detail(body: bytes) -> tuple[str, str | None, str | None]:
    """``(message, code, param)`` from an upstream error body in any common shape.

    OpenAI, llama.cpp and Ollama send ``{"error": {"message", ...}}``, some servers
    ``{"error": "text"}``, vLLM ``{"message": ..., "type": ...}``, FastAPI servers
    ``{"detail": ...}``; anything else is shown as (trimmed) text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    message, code, param = text, None, None
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, str):
            message = err
        elif isinstance(err, dict):
            raw = err.get("message") or err.get("detail") or err.get("msg")
            if raw is not None:
                message = raw if isinstance(raw, str) else json.dumps(raw)
            if isinstance(err.get("code"), str):
                code = err["code"]
            if isinstance(err.get("param"), str):
                param = err["param"]
    message = " ".join(message.split())
    if len(message) > MAX_UPSTREAM_MESSAGE:
        message = message[:MAX_UPSTREAM_MESSAGE] + "..."
    return message or "(empty body)", code, param


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks us to wait: ``retry-after-ms``, ``Retry-After`` as
    seconds or as an HTTP date; ``None`` when absent or unreadable.

    The header is the peer's text: the result is always finite and within
    ``0 .. kernel.types.MAX_RETRY_AFTER_SECONDS`` (a day; ``inf`` and ``1e999`` are clamped, a negative
    value or a date in the past is 0, ``nan`` and garbage are unreadable).
    """
    ms = headers.get("retry-after-ms")
    if ms:
        seconds = _number(ms)
        if seconds is not None:
            return bounded_retry_after(seconds / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return bounded_retry_after(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return bounded_retry_after(seconds)


def _number(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return None if math.isnan(seconds) else seconds


def http_status_error(label: str, status: int, body: bytes, retry_after: float | None) -> RunError:
    """The run error for an upstream HTTP error answer (after any retries)."""
    message, code, param = upstream_error_detail(body)
    said = f"{label} answered HTTP {status}: {message}"
    if status in (401, 403):
        return RunError(
            f"{label} rejected the gateway's credentials (HTTP {status}): {message}. "
            "Check api_key (and headers) in this provider's [providers] table.",
            code="upstream_auth_failed", type="server_error", status=502,
        )
    if status == 429:
        return RunError(said, code="upstream_rate_limited", type="rate_limit_error", status=429,
                        retry_after=retry_after if retry_after is not None else 1.0)
    if status in PASS_THROUGH_STATUSES:
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return RunError(said, code=code or "upstream_rejected_request", type=kind, status=status, param=param)
    if status in (408, 504):
        return RunError(said, code="upstream_timeout", type="server_error", status=504)
    return RunError(said, code="upstream_error", type="server_error", status=502)


def connection_error(label: str, what: str) -> RunError:
    """Could not reach the upstream (after retries), or it went away."""
    return RunError(f"{label}: {what}", code="upstream_connection_error", type="server_error", status=502)


def timeout_error(label: str, what: str) -> RunError:
    """The upstream was too slow."""
    return RunError(f"{label}: {what}", code="upstream_timeout", type="server_error", status=504)


def bad_response(label: str, what: str) -> RunError:
    """The upstream sent something that is not a Chat Completions stream."""
    return RunError(f"{label}: {what}", code="upstream_bad_response", type="server_error", status=502)
