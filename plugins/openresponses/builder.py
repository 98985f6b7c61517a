"""Run events -> OpenResponses streaming events and the final ``ResponseResource``.

:class:`ResponseBuilder` is a pure, synchronous state machine: feed it the kernel's
run events and it appends semantic events (``response.created`` ...
``response.completed``) with consecutive ``sequence_number`` values to
:attr:`ResponseBuilder.events`, calling each of its :attr:`listeners` with every new
event. :meth:`ResponseBuilder.resource` is the response as it stands; once
:attr:`done`, it is exactly the ``response`` of the terminal event. A streaming and
a non-streaming request therefore describe the same response, and a store can
persist the event log (for resumable streams) and the resource by listening.
With ``record_events=False`` (plain JSON requests) no events are built at all; the
items, and so the resource, are the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kernel import (
    Failed,
    Finished,
    ReasoningDelta,
    RunError,
    RunEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Usage,
)
from plugins.openresponses import mcp_items
from plugins.openresponses import resource as r

log = logging.getLogger("plugins.openresponses")

Event = dict[str, Any]
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_DELTA_EVENTS = {"function_call": "response.function_call_arguments.delta",
                 "custom_tool_call": "response.custom_tool_call_input.delta"}
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter", "cancelled": "cancelled"}


@dataclass(slots=True)
class _Out:
    """One output item while it is being built."""

    kind: str  # "message", "reasoning", "function_call", "custom_tool_call", or a server-side tool item (mcp_items)
    id: str
    index: int
    status: str = "in_progress"
    # Message or reasoning text, or function call arguments, as received: joined on demand
    # so a long answer costs O(n), not the O(n^2) of repeated string concatenation.
    chunks: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    namespace: str | None = None
    # A server-side tool item's fields (rendered by mcp_items.wire); None for the others.
    data: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        if len(self.chunks) > 1:
            self.chunks[:] = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""

    def wire(self, *, added: bool = False) -> dict[str, Any]:
        """The item as the schema wants it; ``added`` renders the empty just-added shape."""
        if self.data is not None:
            return mcp_items.wire(self, added)
        if self.kind == "message":
            return r.message_item(self.id, self.status, None if added else self.text)
        if self.kind == "reasoning":
            return r.reasoning_item(self.id, self.status, None if added else self.text)
        if self.kind == "custom_tool_call":
            return r.custom_tool_call_item(self.id, self.status, self.call_id, self.name,
                                           "" if added else self.text, self.namespace)
        return r.function_call_item(self.id, self.status, self.call_id, self.name, "" if added else self.text,
                                    self.namespace)


class ResponseBuilder:
    """Builds one response from one run's events. Not thread-safe; one event loop feeds it."""

    def __init__(self, params: r.ResponseParams, *, response_id: str | None = None,
                 created_at: int | None = None, record_events: bool = True,
                 item_ids: Callable[[int, str], str] | None = None) -> None:
        self.params = params
        # Names output item ``index`` given its id prefix (a conversation turn's items take
        # the ids its transcript keeps); None draws fresh ids.
        self._item_ids = item_ids
        self.id = response_id or r.new_id(r.RESPONSE_PREFIX)
        self.created_at = int(time.time()) if created_at is None else created_at
        self.status = "in_progress"
        self.events: list[Event] = []
        # Called with every event as it is produced (e.g. to persist the event log).
        self.listeners: list[Callable[[Event], None]] = []
        # False skips building events nobody will read (a plain JSON request): the items,
        # and so the final resource, are the same either way. Set before start().
        self.record_events = record_events
        self.usage: Usage | None = None
        self.error: RunError | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self.done = False
        self._items: list[_Out] = []
        self._open: _Out | None = None  # the message or reasoning item receiving deltas
        self._calls: dict[int, _Out] = {}
        self._server_calls: dict[str, _Out] = {}  # running server-side calls by call id
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, queued: bool = False) -> None:
        """Emit ``response.created`` and ``response.in_progress`` (``response.queued`` when queued)."""
        if self._started:
            return
        self._started = True
        self.status = "queued" if queued else "in_progress"
        self._lifecycle("response.created")
        self._lifecycle("response.queued" if queued else "response.in_progress")

    def begin(self) -> None:
        """A queued response starts running: ``response.in_progress``."""
        self.start()
        if self.status == "queued":
            self.status = "in_progress"
            self._lifecycle("response.in_progress")

    def feed(self, event: RunEvent) -> None:
        """Advance with one run event; ignored once the response is done."""
        if self.done:
            return
        if not self._started or self.status == "queued":
            self.begin()
        if isinstance(event, TextDelta):  # the hot path: one per token
            if event.text:
                item = self._open
                if item is None or item.kind != "message":
                    item = self._open_item("message")
                self._delta(item, event.text)
        elif isinstance(event, ReasoningDelta):
            if event.text:
                self._delta(self._open_item("reasoning"), event.text)
        elif isinstance(event, ToolCallStart):
            self._start_call(event.index, event.call_id, event.name, event.tool_kind)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is not None and call.status == "in_progress" and event.arguments:
                call.chunks.append(event.arguments)
                if self.record_events:
                    self._push({"type": _DELTA_EVENTS[call.kind],
                                "sequence_number": len(self.events), "item_id": call.id, "output_index": call.index,
                                "delta": event.arguments})
        elif isinstance(event, ToolCallDone):
            self._finish_call(event)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finished):
            self._finish(event.reason)
        elif isinstance(event, Failed):
            self._fail(event.error)
        elif event.kind in mcp_items.SERVER_EVENT_KINDS:
            mcp_items.feed(self, event)

    def feed_many(self, events: Sequence[RunEvent]) -> None:
        """Feed a finished run's recorded events at once.

        Without recorded events only the text matters, so runs of text deltas are
        joined into one: the items, and the resource, come out the same, cheaper.
        """
        if self.record_events:
            for event in events:
                self.feed(event)
            return
        count = len(events)
        i = 0
        while i < count:
            event = events[i]
            i += 1
            if type(event) is TextDelta:
                texts = [event.text]
                while i < count and type(events[i]) is TextDelta:
                    texts.append(events[i].text)  # type: ignore[union-attr]
                    i += 1
                event = TextDelta("".join(texts))
            self.feed(event)

    def complete_without_output(self) -> None:
        """End as ``completed`` with no output and no run (a WebSocket ``generate: false`` warmup)."""
        if self.done:
            return
        self.start()
        self.status = "completed"
        self.completed_at = int(time.time())
        self._terminal("response.completed")

    def resource(self) -> dict[str, Any]:
        """The ``ResponseResource`` as it stands now (final once :attr:`done`)."""
        return r.response_resource(
            self.params, response_id=self.id, created_at=self.created_at, status=self.status,
            output=[item.wire() for item in self._items], usage=r.usage_object(self.usage),
            error=r.error_object(self.error) if self.error else None,
            incomplete_details=self.incomplete_details, completed_at=self.completed_at,
        )

    @property
    def sequence_number(self) -> int:
        """The sequence number of the last event so far (-1 before the first)."""
        return len(self.events) - 1

    # ------------------------------------------------------------------ items

    def _open_item(self, kind: Literal["message", "reasoning"]) -> _Out:
        item = self._open
        if item is not None and item.kind == kind:
            return item
        self._close_open("completed")
        prefix = r.MESSAGE_PREFIX if kind == "message" else r.REASONING_PREFIX
        item = _Out(kind=kind, id=self._new_item_id(prefix), index=len(self._items))
        self._items.append(item)
        self._open = item
        if self.record_events:
            self._emit({"type": "response.output_item.added", "output_index": item.index,
                        "item": item.wire(added=True)})
            self._emit({"type": "response.content_part.added", "item_id": item.id, "output_index": item.index,
                        "content_index": 0, "part": self._part(item, "")})
        return item

    def _new_item_id(self, prefix: str) -> str:
        if self._item_ids is None:
            return r.new_id(prefix)
        return self._item_ids(len(self._items), prefix)

    def _delta(self, item: _Out, text: str) -> None:
        item.chunks.append(text)
        # Built in one literal (not through _emit) because this runs once per token.
        if not self.record_events:
            return
        if item.kind == "message":
            self._push({"type": "response.output_text.delta", "sequence_number": len(self.events),
                        "item_id": item.id, "output_index": item.index, "content_index": 0, "delta": text,
                        "logprobs": []})
        else:
            self._push({"type": "response.reasoning.delta", "sequence_number": len(self.events),
                        "item_id": item.id, "output_index": item.index, "content_index": 0, "delta": text})

    def _close_open(self, status: str) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        item.status = status
        if not self.record_events:
            return
        base = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        if item.kind == "message":
            self._emit({"type": "response.output_text.done", **base, "text": item.text, "logprobs": []})
        else:
            self._emit({"type": "response.reasoning.done", **base, "text": item.text})
        self._emit({"type": "response.content_part.done", **base, "part": self._part(item, item.text)})
        self._emit({"type": "response.output_item.done", "output_index": item.index, "item": item.wire()})

    @staticmethod
    def _part(item: _Out, text: str) -> dict[str, Any]:
        if item.kind == "message":
            return r.output_text_part(text)
        return {"type": "reasoning_text", "text": text}

    def _add_item(self, kind: str, item_id: str, data: dict[str, Any]) -> _Out:
        """Append a server-side tool item (in progress) and announce it."""
        self._close_open("completed")
        item = _Out(kind=kind, id=item_id, index=len(self._items), data=data)
        self._items.append(item)
        if self.record_events:
            self._emit({"type": "response.output_item.added", "output_index": item.index,
                        "item": item.wire(added=True)})
        return item

    def _start_call(self, index: int, call_id: str, name: str, tool_kind: str = "function") -> _Out:
        self._close_open("completed")
        custom = tool_kind == "custom"
        namespace: str | None = None
        route = self.params.tool_namespaces.get(name)
        if route is not None:  # a tool inside a namespace: the client knows it by namespace + name
            namespace, name = route
        call = _Out(kind="custom_tool_call" if custom else "function_call",
                    id=self._new_item_id(r.CUSTOM_TOOL_CALL_PREFIX if custom else r.FUNCTION_CALL_PREFIX),
                    index=len(self._items), call_id=call_id, name=name, namespace=namespace)
        self._items.append(call)
        self._calls[index] = call
        if self.record_events:
            self._emit({"type": "response.output_item.added", "output_index": call.index,
                        "item": call.wire(added=True)})
        return call

    def _finish_call(self, event: ToolCallDone) -> None:
        call = self._calls.get(event.index)
        if call is None:
            call = self._start_call(event.index, event.call_id, event.name, event.tool_kind)
        if call.status != "in_progress":
            return
        if not call.chunks and event.arguments:
            # Clients that assemble arguments from deltas must still see them.
            self._emit({"type": _DELTA_EVENTS[call.kind], "item_id": call.id,
                        "output_index": call.index, "delta": event.arguments})
        call.chunks[:] = [event.arguments]
        self._close_call(call, "completed")

    def _close_call(self, call: _Out, status: str) -> None:
        call.status = status
        if not self.record_events:
            return
        if call.kind == "custom_tool_call":
            self._emit({"type": "response.custom_tool_call_input.done", "item_id": call.id,
                        "output_index": call.index, "input": call.text})
        else:
            self._emit({"type": "response.function_call_arguments.done", "item_id": call.id,
                        "output_index": call.index, "name": call.name, "arguments": call.text})
        self._emit({"type": "response.output_item.done", "output_index": call.index, "item": call.wire()})

    def _close_all(self, status: str) -> None:
        self._close_open(status)
        for item in self._server_calls.values():  # server-side calls cut short (cancel, failure)
            item.status = "incomplete"
            self._emit({"type": "response.output_item.done", "output_index": item.index, "item": item.wire()})
        self._server_calls.clear()
        for call in self._calls.values():
            if call.status == "in_progress":
                self._close_call(call, status)

    # ------------------------------------------------------------------ terminal

    def _finish(self, reason: str) -> None:
        if reason in _INCOMPLETE_REASONS:
            self._close_all("incomplete")
            self.status = "cancelled" if reason == "cancelled" else "incomplete"
            self.incomplete_details = {"reason": _INCOMPLETE_REASONS[reason]}
            self._terminal("response.incomplete")
            return
        if not self._items:
            # A run that said nothing still answers with one (empty) message, announced like any other.
            self._open_item("message")
        self._close_all("completed")
        self.status = "completed"
        self.completed_at = int(time.time())
        self._terminal("response.completed")

    def _fail(self, error: RunError) -> None:
        self._close_all("incomplete")
        self.status = "failed"
        self.error = error
        # "status" and a string "code" make the one error event valid both as the SSE
        # ErrorStreamingEvent and as the WebSocketErrorEvent, so both transports send the same bytes.
        self._emit({"type": "error", "status": error.status,
                    "error": {"type": error.type, "code": error.code or "server_error", "message": error.message,
                              "param": error.param}})
        self._terminal("response.failed")

    def _terminal(self, kind: str) -> None:
        self.done = True
        self._lifecycle(kind)
        # No event follows the terminal one. The listeners (followers, the store) point back
        # at this builder: letting go of them breaks that cycle, so a finished response is
        # freed by reference counting instead of waiting for a full garbage collection.
        self.listeners = []

    # ------------------------------------------------------------------ emitting

    def _lifecycle(self, kind: str) -> None:
        if self.record_events:
            self._emit({"type": kind, "response": self.resource()})

    def _emit(self, body: Event) -> None:
        # Callers on per-item paths check record_events first, so no event is even built.
        if self.record_events:
            self._push({"type": body.pop("type"), "sequence_number": len(self.events), **body})

    def _push(self, event: Event) -> None:
        self.events.append(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener (e.g. a store) must never break the response
                log.exception("response %s: event listener failed", self.id)
