"""The client messages of WebSocket mode: decoding and ``response.create`` validation."""

from __future__ import annotations

from typing import Any

from kernel import ApiError
from kernel.http import decode_json
from plugins.openresponses import models as m
from plugins.openresponses.hosted import HostedToolsPolicy
from plugins.openresponses.request import ParsedRequest, parse_create_body

CREATE = "response.create"
# HTTP-only fields the spec forbids in a WebSocket response.create (x-openresponses-disallowed).
DISALLOWED_FIELDS = ("stream", "stream_options", "background")
# Codex's warmup flag: the 2026-04-24 schema dropped it, so it is accepted as an extension.
GENERATE = "generate"


def decode_message(message: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One client message -> its JSON object; 400/413 (as error events) when it is not one."""
    size = len(message.encode() if isinstance(message, str) else message)
    if size > max_bytes:
        raise ApiError(413, f"this message is {size} bytes, over the server's limit of {max_bytes} bytes "
                       "([plugins.openresponses] max_body_bytes)", code="message_too_large")
    data = decode_json(message, "the message")  # the same rules as an HTTP body
    if not isinstance(data, dict):
        raise ApiError(400, f"the message must be a JSON object, got {m.type_name(data)}", code="invalid_type")
    kind = data.get("type")
    if kind != CREATE:
        what = "missing" if kind is None else f"{kind!r} is not supported"
        raise ApiError(400, f"message type {what}; this endpoint accepts {CREATE!r} messages",
                       param="type", code="missing_required_parameter" if kind is None else "invalid_value")
    return data


def parse_create_message(data: dict[str, Any], hosted_tools: HostedToolsPolicy = "omit",
                         ) -> tuple[ParsedRequest, bool]:
    """A ``response.create`` message -> (the parsed create body, whether to generate output)."""
    for name in DISALLOWED_FIELDS:
        if name in data:
            raise ApiError(400, f"{name!r} must not be sent over WebSocket: every turn streams its events and "
                           "none runs in the background; leave the field out", param=name,
                           code="unsupported_parameter")
    generate = data.get(GENERATE, True)
    if not isinstance(generate, bool):
        raise ApiError(400, f"invalid type for 'generate': expected a boolean, got {m.type_name(generate)}",
                       param=GENERATE, code="invalid_type")
    body = {k: v for k, v in data.items() if k not in ("type", GENERATE)}
    parsed = parse_create_body(body, hosted_tools)
    # Every WebSocket turn is streamed (its id is out with response.created), except a
    # warmup, which has no events worth recording and is kept once complete.
    parsed.stream = generate
    return parsed, generate
