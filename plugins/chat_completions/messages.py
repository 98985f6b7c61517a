"""Chat ``messages`` -> the kernel's neutral items.

* system and developer messages become the turn's system text (in order);
* the trailing run of user and tool messages is the turn's ``input``;
* everything before it is ``history``;
* an assistant's ``tool_calls`` become :class:`ToolCall` items, a tool message a
  :class:`ToolResult`.

Parsing is two-phase, as in the OpenResponses plugin: :func:`parse_messages` checks
the whole array's structure without I/O and leaves images and inline files pending;
:meth:`ParsedMessages.load_media` then hands them to the kernel's media loader (size,
type and fetch guard; files become text). So a request that is wrong anywhere gets its
400 before any URL is fetched. Audio input is refused with a 400 naming the part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kernel import ApiError, FilePart, ImagePart, Item, Message, TextPart, ToolCall, ToolResult
from plugins.chat_completions.fields import describe, invalid, required, want

ROLES = ("system", "developer", "user", "assistant", "tool")
DETAILS = ("auto", "low", "high")


class MediaSource(Protocol):
    """What the parser needs from :class:`kernel.media.MediaLoader`."""

    async def image(self, url: str, *, detail: str = "auto", param: str) -> ImagePart: ...

    async def file(self, *, file_data: str | None = None, file_url: str | None = None,
                   filename: str | None = None, param: str) -> FilePart: ...


@dataclass(frozen=True, slots=True)
class PendingImage:
    """An ``image_url`` part checked for shape, not yet loaded."""

    url: str
    detail: str
    param: str


@dataclass(frozen=True, slots=True)
class PendingFile:
    """A ``file`` part with inline data, checked for shape, not yet loaded."""

    file_data: str
    filename: str | None
    param: str


@dataclass(slots=True)
class DraftUserMessage:
    """A user message some of whose parts still need the media loader."""

    parts: list[TextPart | PendingImage | PendingFile]

    async def load(self, media: MediaSource) -> Message:
        """The message with every pending part loaded (in order, so request-wide limits hold)."""
        loaded: list[TextPart | ImagePart | FilePart] = []
        for part in self.parts:
            if isinstance(part, PendingImage):
                loaded.append(await media.image(part.url, detail=part.detail, param=part.param))
            elif isinstance(part, PendingFile):
                loaded.append(await media.file(file_data=part.file_data, filename=part.filename, param=part.param))
            else:
                loaded.append(part)
        return Message("user", loaded)


Draft = Item | DraftUserMessage


@dataclass
class ParsedMessages:
    """The messages array split the way a :class:`kernel.types.Turn` wants it.

    ``history`` and ``input`` may hold :class:`DraftUserMessage` until
    :meth:`load_media` has run. ``unanswered_results`` lists the tool messages whose
    ``tool_call_id`` no earlier assistant message in the request offered, as
    ``(param path, call id)``: fine when a session holds the call, a 400 otherwise.
    """

    system: str
    history: list[Draft] = field(default_factory=list)
    input: list[Draft] = field(default_factory=list)
    unanswered_results: list[tuple[str, str]] = field(default_factory=list)
    has_media: bool = False

    async def load_media(self, media: MediaSource) -> tuple[list[Item], list[Item]]:
        """``(history, input)`` as plain kernel items, pending media loaded."""
        if not self.has_media:  # the common case: nothing to load, nothing to copy
            return self.history, self.input  # type: ignore[return-value]
        return await _load_all(self.history, media), await _load_all(self.input, media)


async def _load_all(drafts: list[Draft], media: MediaSource) -> list[Item]:
    return [await d.load(media) if isinstance(d, DraftUserMessage) else d for d in drafts]


def parse_messages(raw: Any) -> ParsedMessages:
    """Validate ``messages`` and split it into system text, history and input (no I/O)."""
    if raw is None:
        raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                       code="missing_required_parameter")
    messages = want(raw, list, "messages")
    if not messages:
        raise invalid("messages", "empty array. Expected an array with minimum length 1, but got an empty "
                      "array instead.", code="empty_array")
    system: list[str] = []
    converted: list[tuple[str, list[Draft]]] = []
    offered: set[str] = set()  # tool call ids of the assistant messages seen so far
    unanswered: list[tuple[str, str]] = []
    has_media = False
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        message = want(message, dict, path)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"{path}.role", f"{role!r} is not a supported role; expected one of "
                          f"{', '.join(ROLES)}." + (" (The deprecated 'function' role is not supported: "
                                                    "use 'tool' messages.)" if role == "function" else ""))
        if role in ("system", "developer"):
            system.append(_text_only(message.get("content"), f"{path}.content", required_=True))
        elif role == "user":
            parts = _user_parts(message.get("content"), path)
            if any(isinstance(p, PendingImage | PendingFile) for p in parts):
                has_media = True
                converted.append((role, [DraftUserMessage(parts)]))
            else:
                converted.append((role, [Message("user", parts)]))  # type: ignore[arg-type]
        elif role == "assistant":
            items = _assistant_items(message, path)
            offered.update(item.call_id for item in items if isinstance(item, ToolCall))
            converted.append((role, items))
        else:
            call_id = required(message, "tool_call_id", str, f"{path}.tool_call_id")
            output = _text_only(message.get("content"), f"{path}.content", required_=True)
            if call_id not in offered:
                unanswered.append((f"{path}.tool_call_id", call_id))
            converted.append((role, [ToolResult(call_id=call_id, output=output)]))
    # The newest user/tool messages are this turn's input; what precedes them is history.
    split = len(converted)
    while split > 0 and converted[split - 1][0] in ("user", "tool"):
        split -= 1
    return ParsedMessages(
        system="\n\n".join(s for s in system if s),
        history=[item for _, items in converted[:split] for item in items],
        input=[item for _, items in converted[split:] for item in items],
        unanswered_results=unanswered,
        has_media=has_media,
    )


def _text_only(content: Any, path: str, *, required_: bool, allow: tuple[str, ...] = ("text",)) -> str:
    """A string, or an array of text parts joined; other part types are a 400."""
    if content is None:
        if required_:
            raise ApiError(400, f"Missing required parameter: '{path}'.", param=path,
                           code="missing_required_parameter")
        return ""
    if isinstance(content, str):
        return content
    parts = want(content, list, path)
    texts: list[str] = []
    for j, part in enumerate(parts):
        ppath = f"{path}[{j}]"
        part = want(part, dict, ppath)
        kind = part.get("type")
        if kind not in allow:
            raise invalid(f"{ppath}.type", f"{kind!r} parts are not allowed here; expected "
                          f"{' or '.join(repr(a) for a in allow)}.", code="invalid_content_part")
        texts.append(required(part, kind, str, f"{ppath}.{kind}"))
    return "".join(texts)


def _user_parts(content: Any, path: str) -> list[TextPart | PendingImage | PendingFile]:
    path = f"{path}.content"
    if content is None:
        raise ApiError(400, f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter")
    if isinstance(content, str):
        return [TextPart(content)]
    parts = want(content, list, path)
    out: list[TextPart | PendingImage | PendingFile] = []
    for j, part in enumerate(parts):
        ppath = f"{path}[{j}]"
        part = want(part, dict, ppath)
        kind = part.get("type")
        if kind == "text":
            out.append(TextPart(required(part, "text", str, f"{ppath}.text")))
        elif kind == "image_url":
            image = required(part, "image_url", dict, f"{ppath}.image_url")
            url = required(image, "url", str, f"{ppath}.image_url.url")
            detail = image.get("detail") or "auto"
            if detail not in DETAILS:
                raise invalid(f"{ppath}.image_url.detail", f"{detail!r} is not one of {', '.join(DETAILS)}.")
            out.append(PendingImage(url, detail, f"{ppath}.image_url"))
        elif kind == "input_audio":
            raise ApiError(400, f"Audio input is not supported by this gateway ('{ppath}'); send the "
                           "audio's transcript as a 'text' part instead.", param=ppath,
                           code="unsupported_content_type")
        elif kind == "file":
            out.append(_file_part(part, ppath))
        else:
            raise invalid(f"{ppath}.type", f"{kind!r} is not a content part type; expected 'text', "
                          "'image_url' or 'file'.", code="invalid_content_part")
    return out


def _file_part(part: dict[str, Any], path: str) -> PendingFile:
    """A ``file`` part with inline ``file_data``; uploaded ``file_id``s need a Files API we lack."""
    spec = required(part, "file", dict, f"{path}.file")
    if spec.get("file_id") is not None:
        raise ApiError(400, f"'{path}.file.file_id' refers to an uploaded file, but this gateway has no "
                       "Files API; send the content inline as 'file_data' (base64 or a data: URL) with a "
                       "'filename'.", param=f"{path}.file.file_id", code="unsupported_parameter")
    data = required(spec, "file_data", str, f"{path}.file.file_data")
    filename = spec.get("filename")
    if filename is not None:
        want(filename, str, f"{path}.file.filename")
    return PendingFile(data, filename, f"{path}.file")


def _assistant_items(message: dict[str, Any], path: str) -> list[Item]:
    items: list[Item] = []
    text = _text_only(message.get("content"), f"{path}.content", required_=False, allow=("text", "refusal"))
    refusal = message.get("refusal")
    if refusal is not None:
        text += want(refusal, str, f"{path}.refusal")
    if text:
        items.append(Message("assistant", [TextPart(text)]))
    if message.get("function_call") is not None:
        raise invalid(f"{path}.function_call", "the deprecated 'function_call' is not supported; send "
                      "'tool_calls' instead.", code="unsupported_parameter")
    calls = message.get("tool_calls")
    if calls is None:
        return items
    for k, call in enumerate(want(calls, list, f"{path}.tool_calls")):
        cpath = f"{path}.tool_calls[{k}]"
        call = want(call, dict, cpath)
        if call.get("type") == "custom":
            call_id = required(call, "id", str, f"{cpath}.id")
            custom = required(call, "custom", dict, f"{cpath}.custom")
            items.append(ToolCall(call_id=call_id, name=required(custom, "name", str, f"{cpath}.custom.name"),
                                  arguments=required(custom, "input", str, f"{cpath}.custom.input"),
                                  tool_kind="custom"))
            continue
        if call.get("type", "function") != "function":
            raise invalid(f"{cpath}.type", f"{call.get('type')!r} tool calls are not supported; "
                          "expected 'function' or 'custom'.")
        call_id = required(call, "id", str, f"{cpath}.id")
        function = required(call, "function", dict, f"{cpath}.function")
        name = required(function, "name", str, f"{cpath}.function.name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise invalid(f"{cpath}.function.arguments", "expected a JSON-encoded string, but got "
                          f"{describe(arguments)}.", code="invalid_type")
        items.append(ToolCall(call_id=call_id, name=name, arguments=arguments))
    return items
