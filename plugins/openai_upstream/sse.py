"""A small server-sent-events parser (per the WHATWG EventSource rules).

:class:`LineSplitter` cuts the body's bytes into lines, :class:`SseParser` groups the
lines into events. Comments (``: ping``), ``id`` and ``retry`` fields are ignored
because a Chat Completions stream does not use them.
"""

from __future__ import annotations

from dataclasses import dataclass


class LineSplitter:
    """Body bytes -> text lines, across network reads.

    A line ends at ``\\n``, ``\\r\\n`` or ``\\r`` and nowhere else: ``str.splitlines``
    (what httpx's ``aiter_lines`` uses) also splits at U+2028, U+0085 and friends, which
    a server that does not escape them may send raw inside a JSON string. An event
    stream is always UTF-8; line ends are ASCII, so decoding whole lines equals
    decoding the stream incrementally.
    """

    def __init__(self) -> None:
        self._rest: list[bytes] = []  # the unterminated start of the next line
        self._after_cr = False  # the last piece ended in \r: a \n opening the next is its pair

    def feed(self, piece: bytes) -> list[str]:
        """The lines that ``piece`` completes (without their line ends)."""
        if self._after_cr:
            self._after_cr = False
            if piece.startswith(b"\n"):
                piece = piece[1:]
        if b"\n" not in piece and b"\r" not in piece:
            if piece:
                self._rest.append(piece)
            return []
        if self._rest:
            self._rest.append(piece)
            piece = b"".join(self._rest)
            self._rest = []
        if b"\r" not in piece:  # the usual case: \n only
            *lines, rest = piece.split(b"\n")
            if rest:
                self._rest.append(rest)
            return [line.decode("utf-8", "replace") for line in lines]
        self._after_cr = piece.endswith(b"\r")
        lines = piece.splitlines(keepends=True)  # bytes split at \n, \r\n and \r only
        if not lines[-1].endswith((b"\n", b"\r")):
            self._rest.append(lines.pop())
        # Each line holds exactly one line end, at its end.
        return [line.rstrip(b"\r\n").decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        """The last line, when the body ended without a line end."""
        self._after_cr = False
        if not self._rest:
            return []
        rest = b"".join(self._rest)
        self._rest = []
        return [rest.decode("utf-8", "replace")]


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

