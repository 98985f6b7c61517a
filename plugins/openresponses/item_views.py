"""The two views of a stored response's items.

* The *wire* view: the request's ``input`` as listable items, each with an id, in the
  shape ``GET /v1/responses/{id}/input_items`` returns (OpenAI's list of items).
* The *model's* view: kernel items, which ``previous_response_id`` replays. Input is
  kept as the model saw it (media loaded, references resolved, system and developer
  messages as system notes); output is rebuilt from the stored output items, so
  their ids survive for ``item_reference``.
"""

from __future__ import annotations

from typing import Any

from kernel import Item, Message, Reasoning, TextPart, ToolCall
from kernel.types import item_from_dict, item_to_dict
from plugins.openresponses import resource as r
from plugins.openresponses.items import SystemMessage
from plugins.openresponses.server_tools import MCP_ITEM_TYPES, mcp_items
from plugins.openresponses.storage import ChainLink
from plugins.openresponses.tools import NAMESPACE_SEPARATOR

_ID_PREFIXES = {
    "message": r.MESSAGE_PREFIX,
    "function_call": r.FUNCTION_CALL_PREFIX,
    "function_call_output": "fco",
    "custom_tool_call": r.CUSTOM_TOOL_CALL_PREFIX,
    "custom_tool_call_output": "ctco",
    "reasoning": r.REASONING_PREFIX,
    "compaction": r.COMPACTION_PREFIX,
}


# --------------------------------------------------------------------------- wire view


def wire_input_items(raw_input: Any) -> list[dict[str, Any]]:
    """The body's ``input`` (already validated) as items with ids, string content as parts."""
    if raw_input is None:
        return []
    if isinstance(raw_input, str):
        return [_wire_message({"type": "message", "role": "user", "content": raw_input})]
    return [_wire_item(raw) for raw in raw_input]


def _wire_item(raw: dict[str, Any]) -> dict[str, Any]:
    kind = raw.get("type") or ("message" if "role" in raw else "item_reference")
    if kind == "message":
        return _wire_message(raw)
    item = {**raw, "type": kind}
    if kind != "item_reference":
        if not item.get("id"):
            item["id"] = r.new_id(_ID_PREFIXES.get(kind, "item"))
        if kind in ("function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"):
            item.setdefault("status", "completed")
    return item


def _wire_message(raw: dict[str, Any]) -> dict[str, Any]:
    item = {**raw, "type": "message"}
    content = item.get("content")
    if isinstance(content, str):
        # Listings show content as parts, as OpenAI's input_items does.
        item["content"] = [r.output_text_part(content) if item.get("role") == "assistant"
                           else {"type": "input_text", "text": content}]
    elif isinstance(content, list):
        item["content"] = [_wire_part(part) for part in content]
    if not item.get("id"):
        item["id"] = r.new_id(r.MESSAGE_PREFIX)
    item.setdefault("status", "completed")
    return item


def _wire_part(part: Any) -> Any:
    # A listed image states its detail, as the schema requires (the request may leave it to "auto").
    if isinstance(part, dict) and part.get("type") == "input_image" and part.get("detail") is None:
        return {**part, "detail": "auto"}
    return part


# --------------------------------------------------------------------------- model's view


def model_input(items: list[Item], system_messages: list[SystemMessage]) -> list[dict[str, Any]]:
    """This response's own input as the model saw it, for storage.

    ``instructions`` are not kept (a chained request's own apply), but system and
    developer messages were input, so they come along as system notes, first.
    """
    return [item_to_dict(item) for item in model_view(items, system_messages)]


def model_view(items: list[Item], system_messages: list[SystemMessage]) -> list[Item]:
    """This response's own input as kernel items: system/developer messages as notes, first."""
    notes: list[Item] = [Message(role="system", parts=[TextPart(text)]) for _, text in system_messages if text]
    return [*notes, *items]


def output_to_items(output: list[dict[str, Any]]) -> list[Item]:
    """Stored output items (wire shape) -> kernel items, ids kept."""
    items: list[Item] = []
    for out in output:
        kind = out.get("type")
        if kind == "message":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in out.get("content") or [])
            items.append(Message(role="assistant", parts=[TextPart(text)], id=out.get("id"), phase=out.get("phase")))
        elif kind in ("function_call", "custom_tool_call"):
            custom = kind == "custom_tool_call"
            name = out["name"]
            if out.get("namespace"):  # the model knew it by its namespaced name
                name = f"{out['namespace']}{NAMESPACE_SEPARATOR}{name}"
            items.append(ToolCall(call_id=out["call_id"], name=name, id=out.get("id"),
                                  arguments=(out.get("input") if custom else out.get("arguments")) or "",
                                  tool_kind="custom" if custom else "function"))
        elif kind in MCP_ITEM_TYPES:
            items.extend(mcp_items(out))
        elif kind == "reasoning":
            items.append(Reasoning(
                text="".join(c.get("text", "") for c in out.get("content") or []),
                summary=[s.get("text", "") for s in out.get("summary") or []],
                encrypted_content=out.get("encrypted_content"), id=out.get("id"),
            ))
    return items


def chain_items(links: list[ChainLink]) -> list[Item]:
    """The model's view of a whole chain, oldest first: each response's input, then its output."""
    items: list[Item] = []
    for link in links:
        if not link.stored:
            continue
        items.extend(item_from_dict(data) for data in link.model_input)
        items.extend(output_to_items(link.output_items))
    return items


def find_in_link(link: ChainLink, item_id: str) -> Item | None:
    """The item with ``item_id`` among a stored response's input (as seen) and output."""
    for data in link.model_input:
        if data.get("id") == item_id:
            return item_from_dict(data)
    for out in link.output_items:
        if out.get("id") == item_id:
            found = output_to_items([out])
            return found[0] if found else None
    return None
