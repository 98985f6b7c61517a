"""``conversation`` on ``POST /v1/responses``: a turn on the conversation's session.

The kernel does the rest of the work it does for any session: it waits for the
session's lock (two turns on one conversation run one after the other), puts the
transcript before the turn's input, and appends the input and output once the run has
ended, exactly once, cancelled runs included (their output up to the cut). What this
module adds is naming: the items the transcript keeps carry the same ids the response
shows (a run listener names each output item as it starts, and the response builder
takes those names), and the item a cancel or failure cut short is noted
``incomplete``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from kernel import (
    ApiError,
    Failed,
    Finished,
    Item,
    Message,
    Reasoning,
    ReasoningDelta,
    RunEvent,
    TextDelta,
    ToolCall,
    ToolCallDone,
    ToolCallStart,
)
from kernel.session_records import SessionRecord, SessionRecords
from kernel.types import TERMINAL_KINDS
from plugins.openresponses import resource as r

if TYPE_CHECKING:
    from kernel.runs import Run
    from kernel.sessions import SessionStore
    from plugins.openresponses.builder import ResponseBuilder

_PREFIXES: dict[type, str] = {Message: r.MESSAGE_PREFIX, Reasoning: r.REASONING_PREFIX,
                              ToolCall: r.FUNCTION_CALL_PREFIX}
_CUT_REASONS = ("cancelled", "length", "content_filter")


def not_found(conversation_id: str, param: str = "conversation_id") -> ApiError:
    """The 404 for a conversation that is missing, deleted, expired or another key's."""
    return ApiError(404, f"conversation {conversation_id!r} was not found (it may have been deleted or expired, "
                    "or belong to another API key)", param=param, code="conversation_not_found")


async def resolve(records: SessionRecords, principal: str | None, conversation_id: str) -> SessionRecord:
    """The caller's conversation for ``conversation`` on a response request, or 404."""
    record = await records.find(principal, conversation_id)
    if record is None:
        raise not_found(conversation_id, param="conversation")
    return record


def name_input(items: list[Item]) -> None:
    """Give the turn's input items ids (kept in the transcript) where the client sent none."""
    for item in items:
        prefix = _PREFIXES.get(type(item))
        if prefix is not None and item.id is None:  # type: ignore[union-attr]
            item.id = r.new_id(prefix)  # type: ignore[union-attr]


class OutputNames:
    """Names a run's output items as they start, so the transcript and the response agree.

    Attach right after the run starts (before anything awaits), so it sees every event
    before the response builder does. It mirrors how the kernel assembles output items
    from events (a new item when text turns to reasoning or back, one per tool call).
    """

    def __init__(self, run: Run, sessions: SessionStore) -> None:
        self.run = run
        self.sessions = sessions
        self.ids: list[str] = []
        self._open_kind: type | None = None
        self._call_positions: dict[int, int] = {}
        self._calls_done: set[int] = set()
        for event in list(run.events_log):
            self._on_event(run, event)
        run.listeners.append(self._on_event)

    def item_id(self, index: int, prefix: str) -> str:
        """The builder's id source: output item ``index`` (fresh for items the run never made)."""
        return self.ids[index] if index < len(self.ids) else r.new_id(prefix)

    def _on_event(self, run: Run, event: RunEvent) -> None:
        kind = type(event)
        if kind is TextDelta or kind is ReasoningDelta:
            if self._open_kind is not kind:
                self._open_kind = kind
                self.ids.append(r.new_id(r.MESSAGE_PREFIX if kind is TextDelta else r.REASONING_PREFIX))
        elif isinstance(event, ToolCallStart):
            self._new_call(event.index)
        elif isinstance(event, ToolCallDone):
            if event.index not in self._call_positions:
                self._new_call(event.index)
            self._calls_done.add(event.index)
        elif isinstance(event, Finished | Failed):
            self._name_output(event)

    def _new_call(self, index: int) -> None:
        self._open_kind = None
        self._call_positions[index] = len(self.ids)
        self.ids.append(r.new_id(r.FUNCTION_CALL_PREFIX))

    def _name_output(self, event: Finished | Failed) -> None:
        """At the terminal event (before the kernel saves the turn): ids onto the items, cuts noted."""
        output = self.run.result().output
        for item, item_id in zip(output, self.ids, strict=False):
            if isinstance(item, Message | Reasoning | ToolCall) and item.id is None:
                item.id = item_id
        cut = isinstance(event, Failed) or event.reason in _CUT_REASONS
        if not cut or not self.ids:
            return
        if self._open_kind is not None:
            self.sessions.note_status(self.ids[-1], "incomplete")
        for index, position in self._call_positions.items():
            if index not in self._calls_done:
                self.sessions.note_status(self.ids[position], "incomplete")


def drive_after_save(builder: ResponseBuilder, run: Run) -> asyncio.Future[None]:
    """Like :func:`plugins.openresponses.stream.drive`, but the run's terminal event reaches
    the builder only once the run has ended, that is once the kernel has appended the
    turn to the conversation: whoever sees the response finish (a stream, a poll of a
    background response, a JSON answer) then finds its items in the conversation.

    Returns the future that feeds the terminal event; it is done once the builder is.
    """
    held: list[RunEvent] = []

    def feed(event: RunEvent) -> None:
        if event.kind in TERMINAL_KINDS:
            held.append(event)
        else:
            builder.feed(event)

    for event in list(run.events_log):
        feed(event)
    run.listeners.append(lambda _run, event: feed(event))

    async def finish() -> None:
        await run.wait()
        for event in held[:1]:
            builder.feed(event)

    return asyncio.ensure_future(finish())


def output_namer(run: Run, sessions: SessionStore) -> Callable[[int, str], str]:
    """Attach an :class:`OutputNames` to ``run`` and return the builder's id source."""
    return OutputNames(run, sessions).item_id
