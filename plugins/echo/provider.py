"""The echo provider: streams the last user text back word by word."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kernel import (
    FilePart,
    Finished,
    ImagePart,
    Item,
    Message,
    ProviderError,
    Reasoning,
    ReasoningDelta,
    RunError,
    RunEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolResult,
    ToolSpec,
    Turn,
    Usage,
)
from plugins.echo.directives import Directive, next_calls
from plugins.echo.schema_instance import instance_for

_WORD = re.compile(r"\S+\s*|\s+")


class EchoOptions(BaseModel):
    """``[providers.NAME] kind = "echo"`` options; all default to plain echoing."""

    model_config = ConfigDict(extra="forbid")

    # "last_user": echo the newest user (or tool) text. "transcript": echo everything
    # the model sees, one line per item, so tests can check a turn's full view.
    mode: Literal["last_user", "transcript"] = "last_user"
    # Seconds to wait before each word (lets tests cancel or disconnect mid-run).
    delay_seconds: float = Field(0.0, ge=0, le=60)
    # Fail the run after this many words (tests of mid-stream failure).
    fail_after_words: int | None = Field(None, ge=0)
    # Emit a reasoning delta before answering.
    reasoning: bool = False
    accepts_images: bool = False
    # Call this tool (its name as the model sees it, e.g. "apply_patch" or
    # "multi_agent_v1__spawn_agent") whenever it is offered and the newest input is the
    # user's (not a tool result), as if tool_choice forced it: a client's unmodified
    # request (Codex's, with tool_choice "auto") still gets a deterministic call.
    call_tool: str | None = None


def render_item(item: Item, accepts_images: bool) -> str:
    """One line of the transcript view."""
    if isinstance(item, Message):
        parts = []
        for part in item.parts:
            if isinstance(part, TextPart):
                parts.append(part.text)
            elif isinstance(part, FilePart):
                parts.append(part.as_text())
            elif isinstance(part, ImagePart):
                parts.append(f"[image {part.media_type or part.url[:32]}]" if accepts_images else part.placeholder())
        return f"{item.role}: {' '.join(parts)}"
    if isinstance(item, ToolCall):
        if item.tool_kind == "custom":
            return f"custom_tool_call {item.name}<<{item.arguments}>> [{item.call_id}]"
        return f"tool_call {item.name}({item.arguments}) [{item.call_id}]"
    if isinstance(item, ToolResult):
        return f"tool_result [{item.call_id}]: {item.output}"
    if isinstance(item, Reasoning):
        return f"reasoning: {item.text or ' '.join(item.summary)}"
    return str(item)


def last_text(turn: Turn, accepts_images: bool) -> str:
    """The newest user text, or the newest tool result's output."""
    for item in reversed(turn.conversation()):
        if isinstance(item, Message) and item.role == "user":
            return render_item(item, accepts_images).removeprefix("user: ")
        if isinstance(item, ToolResult):
            return item.output
    return ""


class EchoProvider:
    """Deterministic: the same turn always yields the same events."""

    def __init__(self, name: str, options: EchoOptions) -> None:
        self.name = name
        self.options = options
        self.accepts_images = options.accepts_images
        self.turns_seen = 0

    async def aclose(self) -> None:
        return None

    def health(self) -> dict[str, object]:
        """What the console's overview shows: always ready."""
        return {"ok": True, "mode": self.options.mode, "turns": self.turns_seen}

    def answer_text(self, turn: Turn) -> str:
        if self.options.mode == "transcript":
            lines = [f"system: {turn.system}"] if turn.system else []
            lines += [render_item(i, self.accepts_images) for i in turn.conversation()]
            return "\n".join(lines)
        return last_text(turn, self.accepts_images)

    def tools_to_call(self, turn: Turn) -> list[ToolSpec]:
        """The tools this turn calls: the forced ones, else ``call_tool`` when offered to a user turn."""
        forced = turn.forced_tools()
        if forced or self.options.call_tool is None:
            return forced
        if any(isinstance(item, ToolResult) for item in turn.input):
            return []
        return [t for t in turn.offered_tools() if t.name == self.options.call_tool]

    def _calls(self, directives: list[Directive], turn: Turn) -> list[RunEvent]:
        """The events of the calls ``/call`` directives asked for (parallel ones only when allowed)."""
        if not turn.limits.parallel_tool_calls:
            directives = directives[:1]
        events: list[RunEvent] = []
        for index, directive in enumerate(directives):
            call_id = f"call_echo_{self.turns_seen}_{index}"
            events.append(ToolCallStart(index=index, call_id=call_id, name=directive.name))
            events.append(ToolCallDelta(index=index, arguments=directive.arguments))
            events.append(ToolCallDone(index=index, call_id=call_id, name=directive.name,
                                       arguments=directive.arguments))
        return events

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        self.turns_seen += 1
        text = self.answer_text(turn)
        input_tokens = sum(len(render_item(i, False).split()) for i in turn.conversation())
        input_tokens += len(turn.system.split())
        if self.options.reasoning:
            yield ReasoningDelta(f"The user said {len(text.split())} words.")
        directed = next_calls(turn)
        if directed is not None:
            calls_now, results = directed
            if calls_now:
                for event in self._calls(calls_now, turn):
                    yield event
                yield Usage(input_tokens=input_tokens, output_tokens=len(calls_now))
                yield Finished(reason="tool_calls")
                return
            if results and self.options.mode == "last_user":
                text = "\n".join(result.output for result in results)
        forced = self.tools_to_call(turn)
        if forced:
            calls = forced if turn.limits.parallel_tool_calls else forced[:1]
            for index, tool in enumerate(calls):
                # A custom (freeform) tool's input is the text itself; a function gets JSON.
                args = text if tool.tool_kind == "custom" else json.dumps(instance_for(tool.parameters, text))
                call_id = f"call_echo_{self.turns_seen}_{index}"
                kind = tool.tool_kind
                yield ToolCallStart(index=index, call_id=call_id, name=tool.name, tool_kind=kind)
                for piece in (args[: len(args) // 2], args[len(args) // 2:]):
                    if piece:
                        yield ToolCallDelta(index=index, arguments=piece)
                yield ToolCallDone(index=index, call_id=call_id, name=tool.name, arguments=args, tool_kind=kind)
            yield Usage(input_tokens=input_tokens, output_tokens=len(calls))
            yield Finished(reason="tool_calls")
            return
        limit = turn.limits.max_output_tokens
        # Options read once: this loop runs per word and is the hot path of every benchmark.
        fail_after, delay = self.options.fail_after_words, self.options.delay_seconds
        words = _WORD.findall(text)
        emitted = 0
        for word in words:
            if limit is not None and emitted >= limit:
                yield Usage(input_tokens=input_tokens, output_tokens=emitted)
                yield Finished(reason="length")
                return
            if fail_after is not None and emitted >= fail_after:
                raise ProviderError(RunError(
                    f"echo provider {self.name!r} failed after {emitted} words (fail_after_words)",
                    code="provider_error", status=500,
                ))
            if delay:
                await asyncio.sleep(delay)
            yield TextDelta(word)
            emitted += 1
        yield Usage(input_tokens=input_tokens, output_tokens=emitted)
        yield Finished(reason="stop")
