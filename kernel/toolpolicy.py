"""Enforce ``tool_choice``, ``max_tool_calls`` and ``parallel_tool_calls`` on run events.

Providers are asked nicely (they only see the offered tools), but a model can still
call something else; this filter is the hard limit. Suppressed calls never reach a
client, and surviving calls are re-indexed 0..n-1 so endpoints can number them.
"""

from __future__ import annotations

from kernel.types import (
    Finished,
    RunEvent,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    Turn,
)

# Event kinds the policy never looks at; a run passes them on without calling it, because
# every text token is one.
UNFILTERED_KINDS = frozenset({"text_delta", "reasoning_delta", "usage"})
_PASS_THROUGH = UNFILTERED_KINDS | {"failed"}


class ToolPolicy:
    """A stateful filter over one run's events."""

    def __init__(self, turn: Turn) -> None:
        self.choice = turn.tool_choice
        limits = turn.limits
        cap = limits.max_tool_calls
        if not limits.parallel_tool_calls:
            cap = 1 if cap is None else min(cap, 1)
        self.cap = cap
        self._index_map: dict[int, int] = {}
        self._dropped: set[int] = set()
        self.kept = 0
        self.suppressed = 0

    def apply(self, event: RunEvent) -> RunEvent | None:
        """The event to pass on (possibly re-indexed), or ``None`` to drop it."""
        if event.kind in _PASS_THROUGH:  # the common case: text streams through untouched
            return event
        if isinstance(event, ToolCallStart | ToolCallDone) and event.index not in self._index_map:
            if event.index in self._dropped:
                return None
            if not self.choice.permits(event.name) or (self.cap is not None and self.kept >= self.cap):
                self._dropped.add(event.index)
                self.suppressed += 1
                return None
            self._index_map[event.index] = self.kept
            self.kept += 1
        if isinstance(event, ToolCallStart | ToolCallDelta | ToolCallDone):
            if event.index in self._dropped or event.index not in self._index_map:
                return None
            event.index = self._index_map[event.index]
            return event
        if isinstance(event, Finished) and event.reason == "tool_calls" and self.kept == 0:
            return Finished(reason="stop")
        return event
