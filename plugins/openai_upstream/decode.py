"""Chat Completions stream chunks (already JSON-decoded) -> neutral run events.

One :class:`ChunkDecoder` per upstream response. It is pure (no I/O), so every
mapping rule is testable without a server.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from kernel import (
    ReasoningDelta,
    RunEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Usage,
)
from kernel.types import FinishReason

# Upstream finish reasons -> the kernel's. "function_call" is the legacy name of
# "tool_calls"; anything unknown (e.g. "eos") is a normal stop.
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


# Numbers in a chunk are the upstream's word: a token count or a tool-call index
# outside these ranges is treated as missing (a 10**400 "prompt_tokens" would
# otherwise reach sums, the store and clients' JSON parsers).
MAX_TOKEN_COUNT = 2**31 - 1
MAX_TOOL_CALL_INDEX = 1023


def _bounded_int(value: Any, ceiling: int) -> int | None:
    """``value`` if it is an int (not a bool) in ``0 .. ceiling``, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ceiling:
        return value
    return None


def _plain_text(choice: Any) -> str | None:
    """The text of the commonest choice (index 0, no finish reason, a delta of ``content``
    and at most ``role``), else None for the general rules; the same events either way."""
    if type(choice) is not dict or choice.get("finish_reason"):
        return None
    index = choice.get("index", 0)
    delta = choice.get("delta")
    if type(index) is not int or index != 0 or type(delta) is not dict:
        return None
    content = delta.get("content")
    if type(content) is str and (len(delta) == 1 or (len(delta) == 2 and "role" in delta)):
        return content
    return None


class UpstreamFormatError(Exception):
    """A chunk that is valid JSON but not a Chat Completions chunk we can use."""


@dataclass(slots=True)
class _Call:
    """A tool call being assembled from pieces."""

    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    started: bool = False
    sent: int = 0  # how much of ``arguments`` has gone out as deltas


@dataclass
class ChunkDecoder:
    """Turns the chunks of one streamed completion into run events, in order."""

    calls: dict[int, _Call] = field(default_factory=dict)
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    chunks: int = 0
    _calls_done: bool = False

    def feed(self, chunk: Any) -> list[RunEvent]:
        """Events for one chunk."""
        if type(chunk) is dict and chunk.get("usage") is None:  # the hot path: one per token
            choices = chunk.get("choices")
            if type(choices) is list and len(choices) == 1:
                text = _plain_text(choices[0])
                if text is not None:
                    self.chunks += 1
                    return [TextDelta(text)] if text else []
        if not isinstance(chunk, dict):
            raise UpstreamFormatError(f"a stream chunk is a JSON {type(chunk).__name__}, not an object")
        self.chunks += 1
        events: list[RunEvent] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            # Some servers send running totals on every chunk: the last one wins.
            self.usage = map_usage(usage)
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise UpstreamFormatError("'choices' in a stream chunk is not a list")
        for choice in choices:
            # n is never set, so only choice 0 exists; ignore anything else.
            if not isinstance(choice, dict) or _bounded_int(choice.get("index", 0), 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict):
                events.extend(self._delta(delta))
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = _FINISH.get(str(reason), "stop")
                events.extend(self.close_calls())
        return events

    def _delta(self, delta: dict[str, Any]) -> list[RunEvent]:
        events: list[RunEvent] = []
        # DeepSeek, vLLM (old) and llama.cpp say reasoning_content; Ollama, OpenRouter
        # and newer vLLM say reasoning. A server sending both repeats the same text.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            # The neutral seam has no refusal event; the text must not be lost.
            events.append(TextDelta(refusal))
        for piece in delta.get("tool_calls") or []:
            if isinstance(piece, dict):
                events.extend(self._tool_piece(piece))
        return events

    def _tool_piece(self, piece: dict[str, Any]) -> list[RunEvent]:
        index = self._index_for(piece)
        call = self.calls.setdefault(index, _Call())
        if piece.get("id") and call.call_id is None:
            call.call_id = str(piece["id"])
        function = piece.get("function")
        if not isinstance(function, dict):
            function = {}
        if function.get("name") and call.name is None:
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif isinstance(arguments, dict):  # Ollama once sent parsed objects
            call.arguments += json.dumps(arguments)
        events: list[RunEvent] = []
        if not call.started and call.name is not None:
            call.started = True
            if call.call_id is None:  # a few servers omit ids; clients need one
                call.call_id = f"call_{uuid.uuid4().hex[:24]}"
            events.append(ToolCallStart(index=index, call_id=call.call_id, name=call.name))
        if call.started and len(call.arguments) > call.sent:
            events.append(ToolCallDelta(index=index, arguments=call.arguments[call.sent:]))
            call.sent = len(call.arguments)
        return events

    def _index_for(self, piece: dict[str, Any]) -> int:
        index = _bounded_int(piece.get("index"), MAX_TOOL_CALL_INDEX)
        if index is not None:
            return index
        # Without an index: a known id continues its call; a new id, or a name while
        # the newest call already has one, starts a call; anything else continues it.
        piece_id = piece.get("id")
        for i, call in self.calls.items():
            if piece_id and call.call_id == piece_id:
                return i
        function = piece.get("function")
        named = isinstance(function, dict) and bool(function.get("name"))
        if piece_id or not self.calls or (named and self.calls[max(self.calls)].name is not None):
            return max(self.calls, default=-1) + 1
        return max(self.calls)

    def close_calls(self) -> list[RunEvent]:
        """``ToolCallDone`` for every started call, once (at the finish reason or the end)."""
        if self._calls_done:
            return []
        self._calls_done = True
        events: list[RunEvent] = []
        for index in sorted(self.calls):
            call = self.calls[index]
            if not call.started:
                continue
            assert call.call_id is not None and call.name is not None
            # A function without parameters may stream no arguments at all.
            events.append(ToolCallDone(index=index, call_id=call.call_id, name=call.name,
                                       arguments=call.arguments or "{}"))
        return events

    @property
    def has_calls(self) -> bool:
        return any(c.started for c in self.calls.values())

    def final_reason(self) -> FinishReason:
        """The run's finish reason; a stop that made tool calls is a tool_calls finish
        (some servers, e.g. older Ollama, say ``stop`` there)."""
        reason = self.finish_reason or "stop"
        if reason == "stop" and self.has_calls:
            return "tool_calls"
        return reason


def map_usage(usage: dict[str, Any]) -> Usage:
    """Chat Completions usage -> :class:`kernel.Usage`."""

    def number(value: Any) -> int:
        counted = _bounded_int(value, MAX_TOKEN_COUNT)
        return 0 if counted is None else counted

    completion_details = usage.get("completion_tokens_details") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=number(usage.get("prompt_tokens")),
        output_tokens=number(usage.get("completion_tokens")),
        reasoning_tokens=number(completion_details.get("reasoning_tokens") if isinstance(
            completion_details, dict) else 0),
        cached_tokens=number(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0),
        cache_write_tokens=number(prompt_details.get("cache_write_tokens") if isinstance(prompt_details, dict)
                                  else 0),
    )
