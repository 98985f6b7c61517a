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
    elif kind == "custom_tool_call":
        emit("response.output_item.added", output_index=index, item={**item, "input": "", "status": "in_progress"})
        if item.get("input"):
            emit("response.custom_tool_call_input.delta", **base, delta=item["input"])
        emit("response.custom_tool_call_input.done", **base, input=item["input"])
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


# --------------------------------------------------------------------------- interrupted runs


def salvage_output(events: list[Event], unfinished: str = "incomplete") -> list[dict[str, Any]]:
    """The output items an event log got as far as (unfinished ones get status ``unfinished``).

    Used when a restart interrupted a run: what its stream already said is kept; and
    (``unfinished="in_progress"``) to show a run another process executes as it stands.
    """
    items: dict[int, dict[str, Any]] = {}
    finished: set[int] = set()
    for event in events:
        kind = event["type"]
        index = event.get("output_index")
        if kind == "response.output_item.added":
            items[index] = {**event["item"], "content": []} if "content" in event["item"] else dict(event["item"])
        elif kind == "response.output_item.done":
            items[index] = event["item"]
            finished.add(index)
        elif index in items and index not in finished:
            _apply_delta(items[index], kind, event)
    for index, item in items.items():
        if index not in finished:
            item["status"] = unfinished
    return [items[i] for i in sorted(items)]


def _apply_delta(item: dict[str, Any], kind: str, event: Event) -> None:
    if kind == "response.content_part.added":
        item["content"].append(dict(event["part"]))
    elif kind in ("response.output_text.delta", "response.reasoning.delta") and item.get("content"):
        part = item["content"][event.get("content_index", 0)]
        part["text"] = part.get("text", "") + event["delta"]
    elif kind == "response.function_call_arguments.delta":
        item["arguments"] = item.get("arguments", "") + event["delta"]
    elif kind == "response.custom_tool_call_input.delta":
        item["input"] = item.get("input", "") + event["delta"]


def close_interrupted(logged: list[Event], resource: dict[str, Any]) -> list[Event]:
    """Events ending a log a restart cut short: open parts and items done, then the terminal event.

    ``resource`` is the stored (failed) response, whose output was salvaged from the same log.
    """
    added: set[int] = set()
    finished: set[int] = set()
    open_parts: set[tuple[int, int]] = set()
    args_done: set[int] = set()
    for event in logged:
        kind, index = event["type"], event.get("output_index")
        if kind == "response.output_item.added":
            added.add(index)
        elif kind == "response.output_item.done":
            finished.add(index)
        elif kind == "response.content_part.added":
            open_parts.add((index, event["content_index"]))
        elif kind == "response.content_part.done":
            open_parts.discard((index, event["content_index"]))
        elif kind in ("response.function_call_arguments.done", "response.custom_tool_call_input.done"):
            args_done.add(index)
    events: list[Event] = []
    next_sequence = logged[-1]["sequence_number"] + 1 if logged else 0

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": next_sequence + len(events), **fields})

    output = resource.get("output") or []
    for index in sorted(added - finished):
        item = output[index] if index < len(output) else {}
        base = {"item_id": item.get("id", ""), "output_index": index}
        for _, content_index in sorted(p for p in open_parts if p[0] == index):
            part = (item.get("content") or [{}])[content_index]
            at = {**base, "content_index": content_index}
            if item.get("type") == "message":
                emit("response.output_text.done", **at, text=part.get("text", ""), logprobs=[])
            else:
                emit("response.reasoning.done", **at, text=part.get("text", ""))
            emit("response.content_part.done", **at, part=part)
        if item.get("type") == "function_call" and index not in args_done:
            emit("response.function_call_arguments.done", **base, name=item["name"], arguments=item["arguments"])
        if item.get("type") == "custom_tool_call" and index not in args_done:
            emit("response.custom_tool_call_input.done", **base, input=item.get("input", ""))
        emit("response.output_item.done", output_index=index, item=item)
    return events + closing_events(resource, next_sequence + len(events))
