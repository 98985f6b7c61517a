"""Turn -> chat messages for the model's own template.

Small models and their templates know only ``system``/``user``/``assistant`` turns, and
some templates reject anything else (other roles, a second system message, two user
messages in a row). So everything is folded into those three roles: tool calls become
assistant text, tool results and mid-conversation system events become user text, and
neighbours with the same role are merged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kernel import FilePart, ImagePart, Item, Message, TextPart, ToolCall, ToolResult, ToolSpec, Turn

ChatMessage = dict[str, str]


@dataclass(slots=True)
class PromptParts:
    """The pieces a prompt is built from; ``history`` may be trimmed to fit the context."""

    system: str
    history: list[Item]
    current: list[Item]
    # Tool names by call id, from the whole conversation, so a trimmed history still
    # lets a tool result say which tool it answers.
    names: dict[str, str]

    def messages(self) -> list[ChatMessage]:
        """The chat messages, oldest first, system first."""
        return build_messages(self.system, [*self.history, *self.current], self.names)


def message_text(message: Message) -> str:
    """A message's content as the model reads it (images become a placeholder)."""
    out: list[str] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, FilePart):
            out.append(part.as_text())
        elif isinstance(part, ImagePart):
            out.append(part.placeholder())
    return "\n".join(p for p in out if p)


def _tool_names(items: list[Item]) -> dict[str, str]:
    return {i.call_id: i.name for i in items if isinstance(i, ToolCall)}


def item_message(item: Item, names: dict[str, str]) -> ChatMessage | None:
    """One item as a chat message, or ``None`` for items the model need not see."""
    if isinstance(item, Message):
        text = message_text(item)
        if item.role == "system":
            # A session event (e.g. a webhook's wake text), not the instructions.
            return {"role": "user", "content": f"[system note] {text}"}
        return {"role": item.role, "content": text}
    if isinstance(item, ToolCall):
        return {"role": "assistant", "content": f"[called tool {item.name} with arguments {item.arguments}]"}
    if isinstance(item, ToolResult):
        name = names.get(item.call_id, item.call_id)
        return {"role": "user", "content": f"[result of tool {name}]\n{item.output}"}
    return None  # reasoning: this model produces none and cannot use any


def build_messages(system: str, items: list[Item], names: dict[str, str] | None = None) -> list[ChatMessage]:
    """System message (if any) then the conversation, same-role neighbours merged."""
    names = _tool_names(items) if names is None else names
    out: list[ChatMessage] = [{"role": "system", "content": system}] if system else []
    for item in items:
        msg = item_message(item, names)
        if msg is None:
            continue
        if out and out[-1]["role"] == msg["role"] and msg["role"] != "system":
            out[-1] = {"role": msg["role"], "content": f"{out[-1]['content']}\n\n{msg['content']}"}
        else:
            out.append(msg)
    if not out or out[-1]["role"] == "system":
        out.append({"role": "user", "content": ""})
    return out


def join_system(*texts: str) -> str:
    """Join non-empty system texts with a blank line."""
    return "\n\n".join(t for t in texts if t)


def tool_listing(tools: list[ToolSpec]) -> str:
    """The tools, one per line, as the model is shown them when it must pick one."""
    lines = []
    for tool in tools:
        desc = f": {tool.description}" if tool.description else ""
        lines.append(f"- {tool.name}{desc}")
    return "\n".join(lines)


def choose_tool_instructions(tools: list[ToolSpec]) -> str:
    """System text asking the model to name the tool to call."""
    return (
        "You must call exactly one of these tools:\n"
        f"{tool_listing(tools)}\n"
        "Reply with the name of the tool that best fits the conversation."
    )


# text.verbosity / Chat's verbosity, stated to the model (it has no such knob).
VERBOSITY_HINTS = {
    "low": "Answer briefly.",
    "medium": "",
    "high": "Answer in detail.",
}
MAX_GRAMMAR_IN_PROMPT = 2000


def custom_tool_instructions(tool: ToolSpec) -> str:
    """System text asking for a custom (freeform) tool's raw input."""
    desc = f" ({tool.description})" if tool.description else ""
    text = f"You are calling the tool {tool.name}{desc}.\nWrite only the tool's input, as plain text."
    fmt = tool.format or {}
    if fmt.get("type") == "grammar":
        text += f"\nThe input must follow this {fmt.get('syntax')} grammar:\n" \
                f"{str(fmt.get('definition', ''))[:MAX_GRAMMAR_IN_PROMPT]}"
    return text


def tool_arguments_instructions(tool: ToolSpec) -> str:
    """System text asking the model for the arguments of ``tool`` as JSON."""
    desc = f" ({tool.description})" if tool.description else ""
    return (
        f"You are calling the tool {tool.name}{desc}.\n"
        f"Its arguments follow this JSON schema: {json.dumps(tool.parameters, separators=(',', ':'))}\n"
        "Reply with the JSON arguments only, filled in from the conversation."
    )


def json_format_instructions(schema: dict | None) -> str:
    """System text for a JSON answer (the grammar enforces it; this helps the content)."""
    if schema is None:
        return "Reply with a JSON object only."
    return f"Reply with JSON only, following this JSON schema: {json.dumps(schema, separators=(',', ':'))}"


def prompt_parts(turn: Turn, extra_system: str = "") -> PromptParts:
    """Split a turn into system text, trimmable history and the current input."""
    return PromptParts(system=join_system(turn.system, extra_system), history=list(turn.history),
                       current=list(turn.input), names=_tool_names(turn.conversation()))
