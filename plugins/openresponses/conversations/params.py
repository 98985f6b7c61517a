"""Validation of the conversation endpoints' bodies and queries, and of ``conversation``
on ``POST /v1/responses``; every refusal is a 400 naming the field."""

from __future__ import annotations

from typing import Any

from kernel import ApiError, Message, TextPart
from plugins.openresponses.items import Draft, DraftMessage, DraftToolResult, PendingReference, parse_item

# OpenAI's limits: 16 metadata pairs, 64-character keys, 512-character values.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# Items per create or append request (OpenAI allows 20).
MAX_ITEMS_PER_REQUEST = 20
# A conversation id or session key: the kernel's bound on session keys.
MAX_ID_LENGTH = 256


def parse_metadata(value: Any, *, param: str = "metadata") -> dict[str, str]:
    """``metadata``: at most 16 string pairs, keys up to 64 and values up to 512 characters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid type for '{param}': expected an object of string values",
                       param=param, code="invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise ApiError(400, f"'{param}' has {len(value)} pairs; at most {MAX_METADATA_PAIRS} are allowed",
                       param=param, code="metadata_too_large")
    for key, item in value.items():
        at = f"{param}.{key}"
        if len(key) > MAX_METADATA_KEY:
            raise ApiError(400, f"metadata key {key[:80]!r} is {len(key)} characters; at most {MAX_METADATA_KEY} "
                           "are allowed", param=at, code="string_above_max_length")
        if not isinstance(item, str):
            raise ApiError(400, f"invalid type for '{at}': expected a string", param=at, code="invalid_type")
        if len(item) > MAX_METADATA_VALUE:
            raise ApiError(400, f"'{at}' is {len(item)} characters; at most {MAX_METADATA_VALUE} are allowed",
                           param=at, code="string_above_max_length")
    return dict(value)


def parse_items(value: Any, *, param: str = "items", required: bool) -> tuple[list[Draft], bool]:
    """Items to add (at most 20): the same item shapes ``input`` accepts; (drafts, needs resolution).

    System and developer messages are kept as items here (as system notes), unlike in
    ``input``, where they are this turn's instructions.
    """
    if value is None:
        if required:
            raise ApiError(400, f"missing required parameter: '{param}'", param=param,
                           code="missing_required_parameter")
        return [], False
    if not isinstance(value, list):
        raise ApiError(400, f"invalid type for '{param}': expected an array of items", param=param,
                       code="invalid_type")
    if len(value) > MAX_ITEMS_PER_REQUEST:
        raise ApiError(400, f"'{param}' has {len(value)} items; at most {MAX_ITEMS_PER_REQUEST} may be added per "
                       "request", param=param, code="array_above_max_length")
    drafts: list[Draft] = []
    for index, raw in enumerate(value):
        at = f"{param}[{index}]"
        draft = parse_item(raw, at)
        if isinstance(draft, tuple):  # a system or developer message: a note in the transcript
            item_id = raw.get("id") if isinstance(raw.get("id"), str) else None
            draft = Message(role="system", parts=[TextPart(draft[1])], id=item_id)
        drafts.append(draft)
    needs = any(isinstance(d, DraftMessage | DraftToolResult | PendingReference) for d in drafts)
    return drafts, needs


def take_conversation(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Split ``conversation`` off a create body: (the rest, the conversation id or None).

    ``"conv_..."`` and ``{"id": "conv_..."}`` are accepted; with ``previous_response_id``
    it is a 400, as at OpenAI (a turn continues one or the other).
    """
    if "conversation" not in data:
        return data, None
    rest = dict(data)
    raw = rest.pop("conversation")
    if raw is None:
        return rest, None
    ident = raw.get("id") if isinstance(raw, dict) else raw
    param = "conversation.id" if isinstance(raw, dict) else "conversation"
    if not isinstance(ident, str):
        raise ApiError(400, "invalid type for 'conversation': expected a conversation id string or "
                       "{\"id\": \"conv_...\"}", param=param, code="invalid_type")
    if not ident or len(ident) > MAX_ID_LENGTH or not ident.isprintable():
        raise ApiError(400, f"invalid value for '{param}': expected 1 to {MAX_ID_LENGTH} printable characters",
                       param=param, code="invalid_value")
    if rest.get("previous_response_id") is not None:
        raise ApiError(400, "'conversation' and 'previous_response_id' cannot be used together: a response "
                       "continues either a conversation or a previous response", param="conversation",
                       code="invalid_request")
    return rest, ident


def body_object(data: Any) -> dict[str, Any]:
    """A JSON body that must be an object (an empty body reads as ``{}``)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_type")
    return data
