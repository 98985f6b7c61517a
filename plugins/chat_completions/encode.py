"""Run results and run events -> OpenAI ``chat.completion`` / ``chat.completion.chunk`` payloads.

The chunk sequence mirrors OpenAI's: a first chunk carrying the role (``content: ""``,
or ``content: null`` together with the first tool-call piece), content deltas,
tool-call deltas (``index``; ``id``, ``type`` and ``function.name`` on a call's first
piece, argument pieces after), a final chunk with an empty delta and the
``finish_reason``, a usage chunk with ``choices: []`` when ``include_usage`` was
asked for, and ``data: [DONE]``. An error after the stream began is one
``data: {"error": ...}`` event before ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kernel import (
    Failed,
    Finished,
    Message,
    Reasoning,
    ReasoningDelta,
    RunError,
    RunEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Usage,
    error_body,
)

if TYPE_CHECKING:
    from kernel.runs import RunResult

DONE = b"data: [DONE]\n\n"
CANCELLED = RunError("the run was cancelled before it finished (is the server shutting down?)",
                     code="run_cancelled", type="server_error", status=503)


def completion_id(run_id: str) -> str:
    """The ``chatcmpl-...`` id of a run (tied to the run id so logs can be matched)."""
    return "chatcmpl-" + run_id.removeprefix("run_")


def finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    """The kernel's finish reason in Chat Completions terms (never ``cancelled``)."""
    if reason in ("length", "content_filter", "tool_calls"):
        return reason
    # A provider may end with "stop" after calling tools; Chat clients key on "tool_calls".
    return "tool_calls" if has_tool_calls else "stop"


def usage_body(usage: Usage | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object (zeros when the provider reported nothing)."""
    usage = usage or Usage()
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def error_payload(error: RunError) -> dict[str, Any]:
    """A run error as OpenAI's ``{"error": {...}}``."""
    return error_body(error.message, type=error.type, param=error.param, code=error.code)


def completion_body(*, cid: str, created: int, model: str, result: RunResult,
                    expose_reasoning: bool = False) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object for a finished run."""
    text = "".join(i.text for i in result.output if isinstance(i, Message) and i.role == "assistant")
    calls = result.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = [
            {"id": c.call_id, "type": "custom", "custom": {"name": c.name, "input": c.arguments}}
            if c.tool_kind == "custom" else
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    if expose_reasoning:
        reasoning = "".join(i.text for i in result.output if isinstance(i, Reasoning))
        if reasoning:
            message["reasoning_content"] = reasoning
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(result.finish_reason, bool(calls)),
        }],
        "usage": usage_body(result.usage),
    }


# One encoder for every body and chunk: json.dumps with custom separators builds a new one per call.
compact_dumps = json.JSONEncoder(separators=(",", ":")).encode


def sse(payload: str) -> bytes:
    """One ``data:`` event."""
    return b"data: " + payload.encode() + b"\n\n"


class ChunkEncoder:
    """Turns one run's events into SSE bytes, keeping the state the sequence needs.

    Chunks are assembled from pre-serialised templates: content deltas are the hot
    path of every stream, and only the delta changes from one chunk to the next.
    """

    def __init__(self, *, cid: str, created: int, model: str, include_usage: bool,
                 expose_reasoning: bool = False) -> None:
        self.include_usage = include_usage
        self.expose_reasoning = expose_reasoning
        self._ident = (f'"id":{compact_dumps(cid)},"object":"chat.completion.chunk","created":{created},'
                       f'"model":{compact_dumps(model)}')
        self._head = "{" + self._ident + ',"choices":[{"index":0,"delta":'
        self._tail_open = ',"logprobs":null,"finish_reason":null}]' + (',"usage":null' if include_usage else "") + "}"
        self._text_head = "data: " + self._head + '{"content":'
        self._text_tail = "}" + self._tail_open + "\n\n"
        self._role_sent = False
        self._args: dict[int, str] = {}
        self._custom: set[int] = set()  # indexes of custom (freeform) tool calls
        self._has_calls = False
        self._usage: Usage | None = None
        self.done = False

    def _chunk(self, delta: str) -> bytes:
        return sse(self._head + delta + self._tail_open)

    def _role(self) -> bytes:
        if self._role_sent:
            return b""
        self._role_sent = True
        return self._chunk('{"role":"assistant","content":"","refusal":null}')

    def encode(self, ev: RunEvent) -> bytes:
        """The SSE bytes for one event (possibly empty; several events for the terminal one)."""
        if isinstance(ev, TextDelta):
            if not self._role_sent:
                return self._role() + (self.encode(ev) if ev.text else b"")
            if not ev.text:
                return b""
            # The hot path of every stream: one template, one JSON string.
            return (self._text_head + compact_dumps(ev.text) + self._text_tail).encode()
        if isinstance(ev, ToolCallStart):
            if ev.tool_kind == "custom":
                self._custom.add(ev.index)
            return self._call_piece(ev.index, self._call_head(ev.index, ev.call_id, ev.name, ""))
        if isinstance(ev, ToolCallDelta):
            if ev.index not in self._args or not ev.arguments:
                return b""
            self._args[ev.index] += ev.arguments
            return self._call_piece(ev.index, self._call_rest(ev.index, ev.arguments))
        if isinstance(ev, ToolCallDone):
            return self._call_done(ev)
        if isinstance(ev, ReasoningDelta):
            if not self.expose_reasoning or not ev.text:
                return b""
            return self._role() + self._chunk('{"reasoning_content":' + compact_dumps(ev.text) + "}")
        if isinstance(ev, Usage):
            self._usage = ev
            return b""
        if isinstance(ev, Finished):
            if ev.reason == "cancelled":
                return self.error(CANCELLED)
            return self.finish(ev.reason)
        if isinstance(ev, Failed):
            return self.error(ev.error)
        return b""

    def _call_piece(self, index: int, fields: dict[str, Any]) -> bytes:
        first = index not in self._args
        if first:
            custom = index in self._custom
            self._args[index] = (fields.get("custom" if custom else "function") or {}).get(
                "input" if custom else "arguments", "")
            self._has_calls = True
        piece = compact_dumps([{"index": index, **fields}])
        if not self._role_sent and first:
            # OpenAI's first chunk of a tool-calling answer carries the role and the first piece.
            self._role_sent = True
            return self._chunk('{"role":"assistant","content":null,"tool_calls":' + piece + ',"refusal":null}')
        return self._chunk('{"tool_calls":' + piece + "}")

    def _call_head(self, index: int, call_id: str, name: str, text: str) -> dict[str, Any]:
        """A call's first piece: a custom tool's input goes in ``custom.input`` (OpenAI's custom tool call)."""
        if index in self._custom:
            return {"id": call_id, "type": "custom", "custom": {"name": name, "input": text}}
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}

    def _call_rest(self, index: int, text: str) -> dict[str, Any]:
        return {"custom": {"input": text}} if index in self._custom else {"function": {"arguments": text}}

    def _call_done(self, ev: ToolCallDone) -> bytes:
        sent = self._args.get(ev.index)
        if sent is None:  # the provider only reported the finished call
            if ev.tool_kind == "custom":
                self._custom.add(ev.index)
            return self._call_piece(ev.index, self._call_head(ev.index, ev.call_id, ev.name, ev.arguments))
        if ev.arguments.startswith(sent) and len(ev.arguments) > len(sent):
            rest = ev.arguments[len(sent):]
            self._args[ev.index] = ev.arguments
            return self._call_piece(ev.index, self._call_rest(ev.index, rest))
        return b""

    def finish(self, reason: str) -> bytes:
        """The final chunk, the usage chunk when asked for, and ``[DONE]``."""
        self.done = True
        out = self._role()
        tail = ',"logprobs":null,"finish_reason":' + compact_dumps(finish_reason(reason, self._has_calls)) + "}]"
        out += sse(self._head + "{}" + tail + (',"usage":null' if self.include_usage else "") + "}")
        if self.include_usage:
            out += sse("{" + self._ident + ',"choices":[],"usage":' + compact_dumps(usage_body(self._usage)) + "}")
        return out + DONE

    def error(self, error: RunError) -> bytes:
        """A mid-stream failure: one error event, then ``[DONE]``."""
        self.done = True
        return sse(compact_dumps(error_payload(error))) + DONE
