"""A neutral :class:`kernel.Turn` -> an OpenAI Chat Completions request body."""

from __future__ import annotations

from typing import Any

from kernel import (
    FilePart,
    ImagePart,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    Turn,
)
from plugins.openai_upstream.custom_tools import custom_function, wrapped_arguments
from plugins.openai_upstream.settings import UpstreamOptions

# Request options (Limits.hints) that Chat Completions takes under the same name.
_FORWARDED_HINTS = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier")

ChatMessage = dict[str, Any]


def build_body(turn: Turn, options: UpstreamOptions) -> dict[str, Any]:
    """The streaming Chat Completions body for one turn.

    Only fields the turn sets are sent, so servers that know a subset of the API
    (Ollama, llama.cpp ...) keep their own defaults.
    """
    body: dict[str, Any] = dict(options.extra_body)
    body["model"] = turn.model or options.model
    body["messages"] = map_messages(turn, options)
    body["stream"] = True
    if options.stream_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(_tool_fields(turn))
    limits = turn.limits
    if limits.max_output_tokens is not None:
        body[options.max_tokens_field] = limits.max_output_tokens
    if limits.temperature is not None:
        body["temperature"] = limits.temperature
    if limits.top_p is not None:
        body["top_p"] = limits.top_p
    if limits.stop:
        body["stop"] = list(limits.stop)
    if limits.presence_penalty is not None:
        body["presence_penalty"] = limits.presence_penalty
    if limits.frequency_penalty is not None:
        body["frequency_penalty"] = limits.frequency_penalty
    if limits.reasoning_effort is not None:
        # Chat Completions' flat spelling of the Responses API's ``reasoning.effort``.
        body["reasoning_effort"] = limits.reasoning_effort
    if limits.verbosity is not None:
        body["verbosity"] = limits.verbosity
    for name in _FORWARDED_HINTS:
        if name in limits.hints:
            body[name] = limits.hints[name]
    if turn.user is not None:
        body.setdefault("user", turn.user)
    response_format = map_response_format(turn.response_format)
    if response_format is not None:
        body["response_format"] = response_format
    return body


# --------------------------------------------------------------------------- messages


def map_messages(turn: Turn, options: UpstreamOptions) -> list[ChatMessage]:
    """System text first, then every conversation item as chat messages.

    Consecutive tool calls join the assistant message before them (that is how Chat
    Completions expresses parallel calls); reasoning is dropped unless
    ``send_reasoning`` is on, then it rides on the next assistant message.
    """
    out: list[ChatMessage] = []
    if turn.system:
        out.append({"role": "system", "content": turn.system})
    pending_reasoning: list[str] = []
    open_assistant: ChatMessage | None = None  # the assistant message tool calls may join
    for item in turn.conversation():
        if isinstance(item, Reasoning):
            text = item.text or "\n".join(item.summary)
            if options.send_reasoning and text:
                pending_reasoning.append(text)
            continue
        if isinstance(item, ToolCall):
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": None}
                out.append(open_assistant)
            open_assistant.setdefault("tool_calls", []).append(map_tool_call(item))
        elif isinstance(item, ToolResult):
            open_assistant = None
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        elif isinstance(item, Message):
            message = map_message(item, options.accepts_images)
            out.append(message)
            open_assistant = message if item.role == "assistant" else None
        else:  # pragma: no cover - Item is a closed union
            raise TypeError(f"unknown item type {type(item).__name__}")
        if pending_reasoning and open_assistant is not None:
            open_assistant["reasoning_content"] = "\n".join(pending_reasoning)
            pending_reasoning = []
    return out


def map_message(message: Message, accepts_images: bool) -> ChatMessage:
    """One message. Content stays a plain string unless an image needs content parts,
    because several OpenAI-compatible servers only understand string content."""
    images = [p for p in message.parts if isinstance(p, ImagePart)]
    if not images or not accepts_images or message.role != "user":
        return {"role": message.role, "content": "".join(_part_text(p) for p in message.parts)}
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}})
        else:
            parts.append({"type": "text", "text": _part_text(part)})
    return {"role": message.role, "content": parts}


def _part_text(part: TextPart | ImagePart | FilePart) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, FilePart):
        return part.as_text()
    return part.placeholder()


def map_tool_call(call: ToolCall) -> dict[str, Any]:
    """An assistant tool call in Chat Completions form."""
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": wrapped_arguments(call)},
    }


# --------------------------------------------------------------------------- tools & format


def map_tool(tool: ToolSpec) -> dict[str, Any]:
    """A function tool definition (a custom tool as a one-string-argument function)."""
    if tool.tool_kind == "custom":
        return custom_function(tool)
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_fields(turn: Turn) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``.

    ``offered_tools()`` has already applied ``tool_choice`` (none offers nothing, a
    named function or an allow-list narrows the list), so the upstream never sees a
    tool the kernel would suppress. With no tools, none of the three fields is sent:
    OpenAI rejects ``tool_choice`` and ``parallel_tool_calls`` without ``tools``.
    """
    offered = turn.offered_tools()
    if not offered:
        return {}
    choice = turn.tool_choice
    fields: dict[str, Any] = {"tools": [map_tool(t) for t in offered]}
    if choice.function is not None:
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.function}}
    else:
        fields["tool_choice"] = choice.mode
    fields["parallel_tool_calls"] = turn.limits.parallel_tool_calls
    return fields


def map_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The turn's response format as Chat Completions' ``response_format``."""
    if not fmt:
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    return None
