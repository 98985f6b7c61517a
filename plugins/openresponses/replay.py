"""Events for a stored response whose persisted event log is missing or cut short.

A non-streaming foreground response keeps no event log (nobody was listening, and
building one would cost every plain request); a run interrupted by a restart has a
log without its terminal event. For ``GET /v1/responses/{id}?stream=true`` both are
completed here from the stored ``ResponseResource``, deterministically (the same
events and sequence numbers on every read), so ``starting_after`` works on them too.
Item ids are the stored ones; each text or arguments value arrives as one delta.
"""

from __future__ import annotations

from typing import Any

from plugins.openresponses import resource as r
from plugins.openresponses.builder import Event

_TERMINAL_BY_STATUS = {"completed": "response.completed", "failed": "response.failed"}


def events_from_resource(resource: dict[str, Any]) -> list[Event]:
    """The whole event stream of a finished response, rebuilt from its resource."""
    events: list[Event] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    start = {**resource, "status": "in_progress", "output": [], "usage": None, "error": None,
             "incomplete_details": None, "completed_at": None}
    emit("response.created", response=start)
    emit("response.in_progress", response=dict(start))
    for index, item in enumerate(resource.get("output") or []):
        _item_events(emit, index, item)
    events.extend(closing_events(resource, len(events)))
    return events


def closing_events(resource: dict[str, Any], next_sequence: int) -> list[Event]:
    """The terminal event for a finished resource (``error`` first when it failed)."""
    status = resource.get("status")
    kind = _TERMINAL_BY_STATUS.get(status or "", "response.incomplete")
    events: list[Event] = []
    if kind == "response.failed":
        error = resource.get("error") or {"code": "server_error", "message": "the response failed"}
        events.append({"type": "error", "sequence_number": next_sequence,
                       "error": {"type": error.get("type", "server_error"), "code": error.get("code"),
                                 "message": error.get("message", ""), "param": error.get("param")}})
    events.append({"type": kind, "sequence_number": next_sequence + len(events), "response": resource})
    return events


def _item_events(emit: Any, index: int, item: dict[str, Any]) -> None:
    kind = item.get("type")
    base = {"item_id": item["id"], "output_index": index}
    if kind == "function_call":
        emit("response.output_item.added", output_index=index,
             item={**item, "arguments": "", "status": "in_progress"})
        if item.get("arguments"):
            emit("response.function_call_arguments.delta", **base, delta=item["arguments"])
        emit("response.function_call_arguments.done", **base, name=item["name"], arguments=item["arguments"])
    elif kind in ("message", "reasoning"):
        emit("response.output_item.added", output_index=index,
             item={**item, "content": [], "status": "in_progress"})
        for content_index, part in enumerate(item.get("content") or []):
            _part_events(emit, {**base, "content_index": content_index}, kind, part)
    else:  # not produced by this server; announced and finished without deltas
        emit("response.output_item.added", output_index=index, item=item)
    emit("response.output_item.done", output_index=index, item=item)


def _part_events(emit: Any, at: dict[str, Any], kind: str, part: dict[str, Any]) -> None:
    text = part.get("text", "")
    if kind == "message":
        emit("response.content_part.added", **at, part=r.output_text_part(""))
        if text:
            emit("response.output_text.delta", **at, delta=text, logprobs=[])
        emit("response.output_text.done", **at, text=text, logprobs=[])
    else:
        emit("response.content_part.added", **at, part={"type": "reasoning_text", "text": ""})
        if text:
            emit("response.reasoning.delta", **at, delta=text)
        emit("response.reasoning.done", **at, text=text)
    emit("response.content_part.done", **at, part=part)
