"""``POST /v1/responses/compact``: shrink a conversation to its user messages plus a summary.

The agent writes the summary (a normal run through the kernel, no tools, no
session). User, system and developer messages are kept verbatim; everything else
(assistant messages, tool calls and results, reasoning, earlier compactions) is
replaced by one ``compaction`` item whose ``encrypted_content`` carries the summary.
Sent back as input, that item becomes a system note in the history at its place.

``encrypted_content`` is opaque to clients but *not* secret or signed: it is
versioned, base64url-encoded JSON. A client could write the same text as a
message, so nothing is gained by forging one.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from kernel import ApiError, FilePart, ImagePart, Item, Message, Reasoning, TextPart, ToolCall, ToolResult
from plugins.openresponses import resource as r

TOKEN_PREFIX = "akc1."
SUMMARY_HEADING = "Summary of the earlier conversation (compacted):"
MAX_SUMMARY_CHARS = 1_000_000

COMPACT_INSTRUCTIONS = (
    "You compact conversations. Write a summary of the conversation transcript the user sends that keeps "
    "every fact, decision, result of a tool call, open task and user preference needed to continue the "
    "conversation. Write only the summary."
)


def encode_compaction(summary: str) -> str:
    """The ``encrypted_content`` of a compaction item carrying ``summary``."""
    raw = json.dumps({"summary": summary}, ensure_ascii=False, separators=(",", ":")).encode()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_compaction(token: str, param: str) -> str:
    """The history text a compaction item stands for; 400 naming ``param`` if it is not one of ours."""
    problem = ApiError(400, "this compaction item was not produced by this server's /v1/responses/compact "
                       "(or was altered); send the item exactly as it was returned", param=param,
                       code="invalid_encrypted_content")
    if not token.startswith(TOKEN_PREFIX):
        raise problem
    body = token[len(TOKEN_PREFIX):]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise problem from None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, str) or len(summary) > MAX_SUMMARY_CHARS:
        raise problem
    return f"{SUMMARY_HEADING}\n{summary}"


def render_transcript(items: list[Item]) -> str:
    """The conversation as plain text for the summarising run (one block per item)."""
    lines: list[str] = []
    for item in items:
        if isinstance(item, Message):
            lines.append(f"{item.role}: {_message_text(item)}")
        elif isinstance(item, ToolCall):
            lines.append(f"assistant called tool {item.name}({item.arguments}) [call {item.call_id}]")
        elif isinstance(item, ToolResult):
            lines.append(f"tool result [call {item.call_id}]: {item.output}")
        elif isinstance(item, Reasoning):
            lines.append(f"assistant reasoning: {item.text or ' '.join(item.summary)}")
    return "\n\n".join(lines)


def _message_text(message: Message) -> str:
    out: list[str] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, FilePart):
            out.append(part.as_text())
        elif isinstance(part, ImagePart):
            out.append(f"[image {part.media_type or ''}]".replace(" ]", "]"))
    return " ".join(out)


def kept_items(items: list[Item], system: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The output items kept verbatim: system/developer messages, then user messages in order."""
    out: list[dict[str, Any]] = []
    for role, text in system:
        out.append(_message(role, [{"type": "input_text", "text": text}], None))
    for item in items:
        if isinstance(item, Message) and item.role == "user":
            out.append(_message("user", [_content(p) for p in item.parts], item.id))
    return out


def _message(role: str, content: list[dict[str, Any]], item_id: str | None) -> dict[str, Any]:
    return {"type": "message", "id": item_id or r.new_id(r.MESSAGE_PREFIX), "status": "completed", "role": role,
            "content": content}


def _content(part: TextPart | ImagePart | FilePart) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail}
    if isinstance(part, FilePart):
        # The extracted text stands in for the file: the original bytes are not kept.
        return {"type": "input_text", "text": part.as_text()}
    return {"type": "input_text", "text": part.text}


def compaction_item(summary: str) -> dict[str, Any]:
    """The ``compaction`` output item."""
    return {"type": "compaction", "id": r.new_id(r.COMPACTION_PREFIX), "encrypted_content": encode_compaction(summary)}


def compact_resource(*, response_id: str, created_at: int, output: list[dict[str, Any]],
                     usage: dict[str, Any] | None) -> dict[str, Any]:
    """A schema-valid ``CompactResource``."""
    return {
        "id": response_id,
        "object": "response.compaction",
        "created_at": created_at,
        "output": output,
        "usage": usage or {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                           "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                           "output_tokens_details": {"reasoning_tokens": 0}},
    }
