"""Kernel items -> conversation items, and the objects the endpoints answer with.

Shapes follow the openai SDK's ``openai.types.conversations`` (``Conversation``,
``ConversationItem``, ``ConversationItemList``). Items are stored once, as the model
sees them (kernel items in the session's transcript); their wire form is rendered on
read. A file the client sent is kept as its extracted text, so it lists as an
``input_text`` part holding that text (delimited with its name and type).
"""

from __future__ import annotations

from typing import Any

from kernel import FilePart, ImagePart, Message, Reasoning, TextPart, ToolCall, ToolResult
from kernel.session_records import SessionItem, SessionRecord
from plugins.openresponses import resource as r

CONVERSATION_PREFIX = "conv"


def conversation_object(record: SessionRecord) -> dict[str, Any]:
    """A ``Conversation``."""
    return {"id": record.id, "object": "conversation", "created_at": int(record.created_at),
            "metadata": dict(record.metadata)}


def deleted_object(conversation_id: str) -> dict[str, Any]:
    """A ``ConversationDeletedResource``."""
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def item_list(items: list[SessionItem], has_more: bool) -> dict[str, Any]:
    """A ``ConversationItemList`` (``first_id``/``last_id`` are strings, empty for an empty page)."""
    data = [wire_item(item) for item in items]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "", "has_more": has_more}


def wire_item(stored: SessionItem) -> dict[str, Any]:
    """One stored item as a ``ConversationItem``."""
    item, item_id = stored.item, stored.id
    status = stored.status or "completed"
    if isinstance(item, Message):
        out: dict[str, Any] = {"type": "message", "id": item_id, "status": status, "role": item.role,
                               "content": [_part(part, item.role) for part in item.parts]}
        if item.phase is not None:
            out["phase"] = item.phase
        return out
    if isinstance(item, ToolCall):
        return r.function_call_item(item_id, status, item.call_id, item.name, item.arguments)
    if isinstance(item, ToolResult):
        return {"type": "function_call_output", "id": item_id, "call_id": item.call_id, "output": item.output,
                "status": status}
    if isinstance(item, Reasoning):
        out = {"type": "reasoning", "id": item_id, "status": status,
               "summary": [{"type": "summary_text", "text": text} for text in item.summary],
               "content": [{"type": "reasoning_text", "text": item.text}] if item.text else []}
        if item.encrypted_content is not None:
            out["encrypted_content"] = item.encrypted_content
        return out
    raise TypeError(f"unknown item {type(item).__name__}")  # pragma: no cover - Item is a closed union


def _part(part: TextPart | ImagePart | FilePart, role: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return r.output_text_part(part.text) if role == "assistant" else {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail}
    return {"type": "input_text", "text": part.as_text()}
