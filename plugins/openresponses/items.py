"""Input items of a ``CreateResponseBody`` -> kernel items, in two steps.

:func:`parse_input` checks every item synchronously (no I/O) and returns *drafts*:
kernel items, except that images, files and ``item_reference`` items are still
pending. :func:`resolve_items` then loads the media through the kernel's
``MediaLoader`` and resolves references, so every structural 400 comes before any
fetch. Errors name the exact field path, e.g. ``input[2].content[0].image_url``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kernel import ApiError, FilePart, ImagePart, Item, Message, Reasoning, TextPart, ToolCall, ToolResult
from kernel.media import MediaLoader
from plugins.openresponses import models as m
from plugins.openresponses.compact import decode_compaction
from plugins.openresponses.hosted import HOSTED_CALL_ITEMS, hosted_call_text
from plugins.openresponses.server_tools import MCP_ITEM_TYPES, mcp_items
from plugins.openresponses.tools import NAMESPACE_SEPARATOR, ParsedTools

# --------------------------------------------------------------------------- drafts


@dataclass(slots=True)
class PendingImage:
    """An ``input_image`` whose URL is loaded in :func:`resolve_items`."""

    url: str
    detail: str
    param: str


@dataclass(slots=True)
class PendingFile:
    """An ``input_file`` whose data or URL is loaded in :func:`resolve_items`."""

    file_data: str | None
    file_url: str | None
    filename: str | None
    param: str


DraftPart = TextPart | PendingImage | PendingFile


@dataclass(slots=True)
class DraftMessage:
    """A user message whose parts still include pending media."""

    role: str
    parts: list[DraftPart]
    id: str | None = None


@dataclass(slots=True)
class DraftToolResult:
    """A ``function_call_output`` whose array output still includes pending media."""

    call_id: str
    parts: list[DraftPart]


@dataclass(slots=True)
class PendingReference:
    """An ``item_reference``, resolved against this request's items, then the store."""

    id: str
    param: str


Draft = Item | DraftMessage | DraftToolResult | PendingReference
SystemMessage = tuple[str, str]  # (role, text) of a system or developer message
ItemLookup = Callable[[str], Awaitable[Item | None]]


# --------------------------------------------------------------------------- input items

_ITEM_TYPES = ("message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
               "reasoning", "item_reference", "compaction", "mcp_list_tools", "mcp_call", "mcp_approval_request",
               "mcp_approval_response", "hosted tool call items")


def parse_input(value: Any, path: str = "input", tools: ParsedTools | None = None,
                ) -> tuple[list[Draft], list[SystemMessage], bool]:
    """``input`` -> (draft items, system/developer messages in order, whether resolution is needed).

    ``tools`` maps namespaced calls in history to the names the model knows them by.
    """
    if isinstance(value, str):
        if len(value) > m.MAX_TEXT:
            raise ApiError(400, f"'{path}' is longer than {m.MAX_TEXT} characters", param=path,
                           code="string_above_max_length")
        return [Message(role="user", parts=[TextPart(value)])], [], False
    if value is None:
        return [], [], False
    if not isinstance(value, list):
        raise ApiError(400, f"invalid type for '{path}': expected a string or an array of items, "
                       f"got {m.type_name(value)}", param=path, code="invalid_type")
    items: list[Draft] = []
    system: list[SystemMessage] = []
    needs = False
    for i, raw in enumerate(value):
        at = f"{path}[{i}]"
        draft = parse_item(raw, at, tools)
        if isinstance(draft, tuple):
            system.append(draft)
            continue
        if isinstance(draft, list):  # an MCP item may stand for a call and its result
            items.extend(draft)
            continue
        needs = needs or isinstance(draft, DraftMessage | DraftToolResult | PendingReference)
        items.append(draft)
    return items, system, needs


def parse_item(raw: Any, at: str, tools: ParsedTools | None = None) -> Draft | SystemMessage:
    """One input item; system and developer messages come back as ``(role, text)``."""
    if not isinstance(raw, dict):
        raise ApiError(400, f"invalid type for '{at}': expected an item object, got {m.type_name(raw)}",
                       param=at, code="invalid_type")
    kind = raw.get("type")
    if kind is None:
        # Clients send messages without "type"; a bare {"id": ...} is an item reference.
        if "role" in raw:
            kind = "message"
        elif "id" in raw:
            kind = "item_reference"
        else:
            raise ApiError(400, f"missing required parameter: '{at}.type' (one of {', '.join(_ITEM_TYPES)})",
                           param=f"{at}.type", code="missing_required_parameter")
    if kind == "message":
        return _message(m.validate(m.MessageItem, raw, at), at)
    if kind == "function_call":
        fc = m.validate(m.FunctionCallItem, raw, at)
        return ToolCall(call_id=fc.call_id, name=_model_name(fc.name, fc.namespace, "function", tools),
                        arguments=fc.arguments, id=fc.id)
    if kind == "function_call_output":
        return _tool_output(m.validate(m.FunctionCallOutputItem, raw, at), at)
    if kind == "custom_tool_call":
        cc = m.validate(m.CustomToolCallItem, raw, at)
        namespace = raw.get("namespace") if isinstance(raw.get("namespace"), str) else None
        return ToolCall(call_id=cc.call_id, name=_model_name(cc.name, namespace, "custom", tools),
                        arguments=cc.input, id=cc.id, tool_kind="custom")
    if kind == "custom_tool_call_output":
        co = m.validate(m.CustomToolCallOutputItem, raw, at)
        # Same output shapes as a function call's (a string or content parts).
        return _tool_output(m.FunctionCallOutputItem(type="function_call_output", call_id=co.call_id,
                                                     output=co.output, id=co.id), at)
    if kind in MCP_ITEM_TYPES:
        return mcp_items(raw, at)  # type: ignore[return-value]  # a list: parse_input spreads it
    if isinstance(kind, str) and kind in HOSTED_CALL_ITEMS:
        # A hosted tool's call from another backend's history: the model reads what happened.
        return Message(role="user" if kind.endswith("_output") else "assistant",
                       parts=[TextPart(hosted_call_text(raw))], id=raw.get("id") if isinstance(raw.get("id"), str)
                       else None)
    if kind == "reasoning":
        r = m.validate(m.ReasoningItem, raw, at)
        text = "".join(c.text for c in r.content or [])
        return Reasoning(text=text, summary=[s.text for s in r.summary], encrypted_content=r.encrypted_content,
                         id=r.id)
    if kind == "item_reference":
        ref = m.validate(m.ItemReference, raw, at)
        return PendingReference(ref.id, f"{at}.id")
    if kind == "compaction":
        c = m.validate(m.CompactionItem, raw, at)
        summary = decode_compaction(c.encrypted_content, f"{at}.encrypted_content")
        return Message(role="system", parts=[TextPart(summary)], id=c.id)
    raise ApiError(400, f"unsupported item type {kind!r} at '{at}.type'; this gateway accepts "
                   f"{', '.join(_ITEM_TYPES)}", param=f"{at}.type", code="invalid_value")


def _model_name(name: str, namespace: str | None, kind: str, tools: ParsedTools | None) -> str:
    """The name the model knows a (namespaced) tool by; unknown tools keep a readable name."""
    if tools is not None:
        found = tools.model_name(name, namespace, kind)
        if found is not None:
            return found
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


_CONTENT_BY_ROLE: dict[str, dict[str, type[m.Wire]]] = {
    "user": {"input_text": m.InputText, "input_image": m.InputImage, "input_file": m.InputFile},
    "system": {"input_text": m.InputText},
    "developer": {"input_text": m.InputText},
    # Assistant history is output_text/refusal; input_text is tolerated (clients rebuild history loosely).
    "assistant": {"output_text": m.OutputText, "refusal": m.Refusal, "input_text": m.InputText},
}


def _message(msg: m.MessageItem, at: str) -> Draft | SystemMessage:
    allowed = _CONTENT_BY_ROLE[msg.role]
    content = msg.content
    parts: list[DraftPart] = []
    if isinstance(content, str):
        if len(content) > m.MAX_TEXT:
            raise ApiError(400, f"'{at}.content' is longer than {m.MAX_TEXT} characters",
                           param=f"{at}.content", code="string_above_max_length")
        parts.append(TextPart(content))
    elif isinstance(content, list):
        for j, raw in enumerate(content):
            parts.append(_content_part(raw, f"{at}.content[{j}]", allowed, msg.role))
    else:
        raise ApiError(400, f"invalid type for '{at}.content': expected a string or an array of content parts, "
                       f"got {m.type_name(content)}", param=f"{at}.content", code="invalid_type")
    if msg.role in ("system", "developer"):
        return msg.role, "\n".join(p.text for p in parts if isinstance(p, TextPart))
    if msg.role == "assistant":
        return Message(role="assistant", parts=[p for p in parts if isinstance(p, TextPart)], id=msg.id,
                       phase=msg.phase)
    if any(not isinstance(p, TextPart) for p in parts):
        return DraftMessage(role="user", parts=parts, id=msg.id)
    return Message(role="user", parts=list(parts), id=msg.id)  # type: ignore[arg-type]


def _content_part(raw: Any, at: str, allowed: dict[str, type[m.Wire]], role: str) -> DraftPart:
    if not isinstance(raw, dict):
        raise ApiError(400, f"invalid type for '{at}': expected a content part object, got {m.type_name(raw)}",
                       param=at, code="invalid_type")
    kind = raw.get("type")
    model = allowed.get(kind) if isinstance(kind, str) else None
    if model is None:
        what = "missing" if kind is None else f"{kind!r} is not accepted"
        raise ApiError(400, f"content part type {what} in a {role} message at '{at}.type'; expected one of "
                       f"{', '.join(allowed)}", param=f"{at}.type", code="invalid_value")
    part = m.validate(model, raw, at)
    if isinstance(part, m.InputText | m.OutputText):
        return TextPart(part.text)
    if isinstance(part, m.Refusal):
        return TextPart(part.refusal)
    if isinstance(part, m.InputImage):
        return _image(part, at)
    if isinstance(part, m.InputFile):
        return _file(part, at)
    raise AssertionError(f"unhandled content part {kind}")  # pragma: no cover - table and branches agree


def _image(part: m.InputImage, at: str) -> PendingImage:
    if part.image_url is None:
        if part.file_id is not None:
            raise ApiError(400, "file_id images are not supported (this gateway has no file storage); send "
                           "image_url as a data: URL or an https URL", param=f"{at}.file_id", code="invalid_value")
        raise ApiError(400, f"missing required parameter: '{at}.image_url'", param=f"{at}.image_url",
                       code="missing_required_parameter")
    return PendingImage(part.image_url, part.detail or "auto", f"{at}.image_url")


def _file(part: m.InputFile, at: str) -> PendingFile:
    if part.file_data is None and part.file_url is None:
        if part.file_id is not None:
            raise ApiError(400, "file_id is not supported (this gateway has no file storage); send file_data "
                           "(base64, with filename) or file_url", param=f"{at}.file_id", code="invalid_value")
        raise ApiError(400, f"an input_file needs file_data (base64, with filename) or file_url at '{at}'",
                       param=f"{at}.file_data", code="missing_required_parameter")
    if part.file_data is not None and part.file_url is not None:
        raise ApiError(400, f"give only one of file_data or file_url at '{at}'", param=f"{at}.file_url",
                       code="invalid_value")
    param = f"{at}.file_data" if part.file_data is not None else f"{at}.file_url"
    return PendingFile(part.file_data, part.file_url, part.filename, param)


_TOOL_OUTPUT_PARTS: dict[str, type[m.Wire]] = {
    "input_text": m.InputText, "input_image": m.InputImage, "input_file": m.InputFile, "input_video": m.InputVideo,
}


def _tool_output(fco: m.FunctionCallOutputItem, at: str) -> Draft:
    output = fco.output
    if isinstance(output, str):
        return ToolResult(call_id=fco.call_id, output=output)
    if not isinstance(output, list):
        raise ApiError(400, f"invalid type for '{at}.output': expected a string or an array of content parts, "
                       f"got {m.type_name(output)}", param=f"{at}.output", code="invalid_type")
    parts: list[DraftPart] = []
    for j, raw in enumerate(output):
        part_at = f"{at}.output[{j}]"
        if isinstance(raw, dict) and raw.get("type") == "input_video":
            video = m.validate(m.InputVideo, raw, part_at)
            # No provider takes video; the model still learns that one was returned and where.
            parts.append(TextPart(f"[video: {video.video_url}]"))
            continue
        parts.append(_content_part(raw, part_at, _TOOL_OUTPUT_PARTS, "function_call_output"))
    return DraftToolResult(call_id=fco.call_id, parts=parts)


# --------------------------------------------------------------------------- loading media


async def _load(part: DraftPart, loader: MediaLoader) -> TextPart | ImagePart | FilePart:
    if isinstance(part, PendingImage):
        return await loader.image(part.url, detail=part.detail, param=part.param)
    if isinstance(part, PendingFile):
        return await loader.file(file_data=part.file_data, file_url=part.file_url, filename=part.filename,
                                 param=part.param)
    return part


async def _tool_result(draft: DraftToolResult, loader: MediaLoader) -> list[Item]:
    """A tool result's text; images it returned follow as a user message so vision models see them."""
    texts: list[str] = []
    images: list[ImagePart] = []
    for part in draft.parts:
        loaded = await _load(part, loader)
        if isinstance(loaded, ImagePart):
            images.append(loaded)
            texts.append(f"[image {len(images)} returned by this tool follows]")
        elif isinstance(loaded, FilePart):
            texts.append(loaded.as_text())
        else:
            texts.append(loaded.text)
    out: list[Item] = [ToolResult(call_id=draft.call_id, output="\n".join(texts))]
    if images:
        intro = TextPart(f"Images returned by tool call {draft.call_id}:")
        out.append(Message(role="user", parts=[intro, *images]))
    return out


# --------------------------------------------------------------------------- resolving drafts


async def resolve_items(drafts: list[Draft], loader: MediaLoader, lookup: ItemLookup | None = None) -> list[Item]:
    """Load pending media and references; returns plain kernel items in order."""
    by_id: dict[str, Item] = {}
    out: list[Item] = []
    for draft in drafts:
        if isinstance(draft, PendingReference):
            found = by_id.get(draft.id)
            if found is None and lookup is not None:
                found = await lookup(draft.id)
            if found is None:
                raise ApiError(404, f"item {draft.id!r} referenced by item_reference was not found in this "
                               "request's input or in a stored response", param=draft.param, code="item_not_found")
            out.append(found)
            continue
        if isinstance(draft, DraftMessage):
            parts = [await _load(p, loader) for p in draft.parts]
            item: Item = Message(role=draft.role, parts=parts, id=draft.id)  # type: ignore[arg-type]
            out.append(item)
            if draft.id:
                by_id[draft.id] = item
            continue
        if isinstance(draft, DraftToolResult):
            out.extend(await _tool_result(draft, loader))
            continue
        out.append(draft)
        item_id = getattr(draft, "id", None)
        if item_id:
            by_id[item_id] = draft
    return out
