"""Custom (freeform) tools over Chat Completions servers that only know function tools.

A custom tool takes one raw string. Most OpenAI-compatible servers (Ollama, vLLM,
llama.cpp ...) know only JSON function tools, so a custom tool is offered as a
function with one string argument, ``input``, whose description carries the tool's
format (a grammar the model should follow); the call's ``{"input": ...}`` is
unwrapped back into the raw string. Past custom calls go upstream wrapped the same way.

The wrapped arguments arrive as JSON pieces, which are not yet the raw input, so a
custom call's input is passed on whole when the call completes (one delta).
"""

from __future__ import annotations

import json
from typing import Any

from kernel import RunEvent, ToolCall, ToolCallDelta, ToolCallDone, ToolCallStart, ToolSpec

INPUT_FIELD = "input"
MAX_FORMAT_IN_DESCRIPTION = 4000


def custom_function(tool: ToolSpec) -> dict[str, Any]:
    """The function-tool definition standing in for a custom tool."""
    about = f"The tool's whole input as one string in '{INPUT_FIELD}'."
    fmt = tool.format or {}
    if fmt.get("type") == "grammar":
        definition = str(fmt.get("definition", ""))[:MAX_FORMAT_IN_DESCRIPTION]
        about += f" The input must match this {fmt.get('syntax')} grammar:\n{definition}"
    description = f"{tool.description}\n\n{about}" if tool.description else about
    parameters = {"type": "object", "properties": {INPUT_FIELD: {"type": "string"}},
                  "required": [INPUT_FIELD], "additionalProperties": False}
    return {"type": "function", "function": {"name": tool.name, "description": description,
                                             "parameters": parameters}}


def wrapped_arguments(call: ToolCall) -> str:
    """A past call's arguments as the upstream saw them (a custom call's input wrapped)."""
    if call.tool_kind == "custom":
        return json.dumps({INPUT_FIELD: call.arguments}, ensure_ascii=False)
    return call.arguments or "{}"


def unwrap_input(arguments: str) -> str:
    """``{"input": "..."}`` -> the raw input; anything else is kept as the model wrote it."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(INPUT_FIELD), str):
        return value[INPUT_FIELD]
    return arguments


class CustomCallFilter:
    """Marks calls of custom tools as such and hands on their unwrapped input when done."""

    def __init__(self, custom_names: set[str]) -> None:
        self.custom_names = custom_names
        self._custom_indexes: set[int] = set()

    def apply(self, event: RunEvent) -> RunEvent | None:
        """The event to pass on (changed for custom calls), or None to drop a wrapped JSON piece."""
        if not self.custom_names:
            return event
        if isinstance(event, ToolCallStart) and event.name in self.custom_names:
            self._custom_indexes.add(event.index)
            event.tool_kind = "custom"
        elif isinstance(event, ToolCallDelta) and event.index in self._custom_indexes:
            return None
        elif isinstance(event, ToolCallDone) and (event.index in self._custom_indexes
                                                   or event.name in self.custom_names):
            event.tool_kind = "custom"
            event.arguments = unwrap_input(event.arguments)
        return event
