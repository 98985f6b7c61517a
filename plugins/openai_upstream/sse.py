"""A small server-sent-events parser over text lines (per the WHATWG EventSource rules).

httpx already splits the body into lines (``\\n``, ``\\r\\n`` or ``\\r``); this module
groups them into events. Comments (``: ping``), ``id`` and ``retry`` fields are
ignored because a Chat Completions stream does not use them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SseEvent:
    """One dispatched event: its ``event:`` name (default ``message``) and data."""

    data: str
    event: str = "message"


class SseParser:
    """Feed lines one at a time; :meth:`feed` returns an event when a blank line ends one."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> SseEvent | None:
        """Consume one line (without its line ending)."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> SseEvent | None:
        """The event still buffered at the end of the stream, if any.

        The specification drops an unterminated last event; servers that close the
        stream right after their last ``data:`` line are common enough that we keep it.
        """
        return self._dispatch()

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(data="\n".join(self._data), event=self._event or "message")
        self._data = []
        self._event = ""
        return event

