"""The ``ResponseResource`` and its output items, as the published schema requires.

All 31 fields of a ``ResponseResource`` are always present; non-nullable ones get
their documented defaults. Every function here returns a *new* dict, so an event
that captured a snapshot is never changed by later progress.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from kernel import RunError, Usage
from kernel.types import Turn

RESPONSE_PREFIX = "resp"
MESSAGE_PREFIX = "msg"
FUNCTION_CALL_PREFIX = "fc"
CUSTOM_TOOL_CALL_PREFIX = "ctc"
REASONING_PREFIX = "rs"
COMPACTION_PREFIX = "cmp"


def new_id(prefix: str) -> str:
    """A fresh id such as ``resp_8f1c...`` (128 random bits)."""
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass
class ResponseParams:
    """The request parameters a response echoes (and a store keeps, to echo them later)."""

    model: str | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: str = "disabled"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    reasoning: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    store: bool = True
    background: bool = False
    service_tier: str = "default"
    metadata: dict[str, str] = field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    # Model-facing tool name -> [namespace, name] for tools inside a namespace tool: calls
    # go back to the client under the name and namespace it declared. Not echoed.
    tool_namespaces: dict[str, list[str]] = field(default_factory=dict)
    # The conversation the response belongs to (OpenAI's extra, see conversations/).
    conversation: str | None = None

    def settle(self, turn: Turn, *, model: str) -> None:
        """Fill what the request left open with what the run really uses (agent defaults)."""
        if self.model is None:
            self.model = model
        limits = turn.limits
        if self.temperature is None:
            self.temperature = limits.temperature
        if self.top_p is None:
            self.top_p = limits.top_p
        if self.max_output_tokens is None:
            self.max_output_tokens = limits.max_output_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for storage)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResponseParams:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (older or newer rows)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def response_resource(
    params: ResponseParams,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A complete, schema-valid ``ResponseResource`` (plus OpenAI's ``conversation`` when set)."""
    body = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "incomplete_details": incomplete_details,
        "model": params.model or "",
        "previous_response_id": params.previous_response_id,
        "instructions": params.instructions,
        "output": output,
        "error": error,
        "tools": [dict(t) for t in params.tools],
        "tool_choice": params.tool_choice,
        "truncation": params.truncation,
        "parallel_tool_calls": params.parallel_tool_calls,
        "text": params.text,
        "top_p": 1.0 if params.top_p is None else params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "top_logprobs": params.top_logprobs,
        "temperature": 1.0 if params.temperature is None else params.temperature,
        "reasoning": params.reasoning,
        "usage": usage,
        "max_output_tokens": params.max_output_tokens,
        "max_tool_calls": params.max_tool_calls,
        "store": params.store,
        "background": params.background,
        "service_tier": params.service_tier,
        "metadata": dict(params.metadata),
        "safety_identifier": params.safety_identifier,
        "prompt_cache_key": params.prompt_cache_key,
    }
    if params.conversation is not None:
        body["conversation"] = {"id": params.conversation}
    return body


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    """The ``Usage`` object with both details objects, or None when the provider reported none."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        # cache_write_tokens: not in the OpenResponses schema (whose details object allows
        # more fields) but required by the openai SDK's ResponseUsage.
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def error_object(error: RunError) -> dict[str, Any]:
    """The response's ``error``: the spec's ``{code, message}`` plus OpenAI's ``type`` and ``param``."""
    return {"code": error.code or "server_error", "message": error.message, "type": error.type,
            "param": error.param}


def output_text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part (``annotations`` and ``logprobs`` always present)."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    """An assistant message; ``text=None`` renders the empty ``content`` of an item just added."""
    content = [] if text is None else [output_text_part(text)]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(item_id: str, status: str, call_id: str, name: str, arguments: str,
                       namespace: str | None = None) -> dict[str, Any]:
    """A ``function_call`` output item (``namespace`` only for a tool inside a namespace tool)."""
    item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def custom_tool_call_item(item_id: str, status: str, call_id: str, name: str, input_text: str,
                          namespace: str | None = None) -> dict[str, Any]:
    """A ``custom_tool_call`` output item (OpenAI's freeform tool call; outside the published spec)."""
    item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": input_text,
            "status": status}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def reasoning_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    """A reasoning item (no ``encrypted_content``: the key must be absent rather than null)."""
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "status": status, "summary": [], "content": content}
