"""A small server-sent-events parser (per the WHATWG EventSource rules).

:class:`LineSplitter` cuts the body's bytes into lines, :class:`SseParser` groups the
lines into events. Comments (``: ping``), ``id`` and ``retry`` fields are ignored
because a Chat Completions stream does not use them.

Both hold bytes the upstream chose, so both are bounded: a line longer than
``max_line`` (or an event whose data lines add up to more than ``max_event``) raises
:class:`SseLimitError` instead of growing the buffer; the splitter never holds more
than ``max_line`` bytes of an unfinished line.
"""

from __future__ import annotations

from dataclasses import dataclass

# Generous: a Chat Completions chunk is normally well under a kilobyte, but one chunk
# may carry a whole tool call's arguments or a long non-incremental answer.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class SseLimitError(ValueError):
    """A line or an event of the stream is over its limit (``what`` says which)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} longer than {limit} bytes")
        self.what = what
        self.limit = limit


class LineSplitter:
    """Body bytes -> text lines, across network reads.

    A line ends at ``\\n``, ``\\r\\n`` or ``\\r`` and nowhere else: ``str.splitlines``
    (what httpx's ``aiter_lines`` uses) also splits at U+2028, U+0085 and friends, which
    a server that does not escape them may send raw inside a JSON string. An event
    stream is always UTF-8; line ends are ASCII, so decoding whole lines equals
    decoding the stream incrementally.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_line = max_line
        self._rest: list[bytes] = []  # the unterminated start of the next line
        self._held = 0  # bytes in _rest; never more than max_line
        self._after_cr = False  # the last piece ended in \r: a \n opening the next is its pair
        # A line over the cap found after complete lines of the same piece: those lines
        # are returned first, the error is raised by the next call.
        self._pending: SseLimitError | None = None

    @property
    def idle(self) -> bool:
        """Whether the next piece starts a fresh line (nothing held, no error pending)."""
        return not self._rest and not self._after_cr and self._pending is None

    @property
    def held(self) -> int:
        """Bytes of an unfinished line held for the next piece (at most ``max_line``)."""
        return self._held

    def feed(self, piece: bytes) -> list[str]:
        """The lines that ``piece`` completes (without their line ends).

        Raises :class:`SseLimitError` for a line over ``max_line`` bytes, before
        holding more than ``max_line`` bytes of it. The complete lines before such a
        line in the same piece are returned first (a client may read many events and
        the start of a runaway line in one network read); the next call raises.
        """
        if self._pending is not None:
            raise self._pending
        if self._after_cr:
            self._after_cr = False
            if piece.startswith(b"\n"):
                piece = piece[1:]
        if b"\n" not in piece and b"\r" not in piece:
            if piece:
                self._hold(piece)
            return []
        if self._rest:
            self._rest.append(piece)
            piece = b"".join(self._rest)
            self._rest = []
            self._held = 0
        if b"\r" not in piece:  # the usual case: \n only
            *raw, rest = piece.split(b"\n")
        else:
            self._after_cr = piece.endswith(b"\r")
            raw = piece.splitlines(keepends=True)  # bytes split at \n, \r\n and \r only
            rest = b"" if raw[-1].endswith((b"\n", b"\r")) else raw.pop()
            # Each line holds exactly one line end, at its end.
            raw = [line.rstrip(b"\r\n") for line in raw]
        if max(map(len, raw)) > self.max_line:
            raw = raw[:next(i for i, line in enumerate(raw) if len(line) > self.max_line)]
            return self._fail_after(raw)
        if rest:
            if len(rest) > self.max_line:
                return self._fail_after(raw)
            self._hold(rest)
        return [line.decode("utf-8", "replace") for line in raw]

    def _fail_after(self, complete: list[bytes]) -> list[str]:
        """``complete`` lines now, the limit error on the next call (at once if none)."""
        error = SseLimitError("a line", self.max_line)
        if not complete:
            raise error
        self._pending = error
        self._rest = []
        self._held = 0
        return [line.decode("utf-8", "replace") for line in complete]

    def _hold(self, piece: bytes) -> None:
        if self._held + len(piece) > self.max_line:
            raise SseLimitError("a line", self.max_line)
        self._rest.append(piece)
        self._held += len(piece)

    def flush(self) -> list[str]:
        """The last line, when the body ended without a line end."""
        if self._pending is not None:
            raise self._pending
        self._after_cr = False
        if not self._rest:
            return []
        rest = b"".join(self._rest)
        self._rest = []
        self._held = 0
        return [rest.decode("utf-8", "replace")]


@dataclass(slots=True)
class SseEvent:
    """One dispatched event: its ``event:`` name (default ``message``) and data."""

    data: str
    event: str = "message"


class SseParser:
    """Feed lines one at a time; :meth:`feed` returns an event when a blank line ends one."""

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event = max_event
        self._data: list[str] = []
        self._size = 0  # characters of data so far (a character is at least one byte)
        self._event = ""

    @property
    def idle(self) -> bool:
        """Whether no event is half-read (the next line starts a new one)."""
        return not self._data and not self._event

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
            # Many short data lines and no blank line would otherwise grow one event forever.
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise SseLimitError("an event", self.max_event)
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
        self._size = 0
        self._event = ""
        return event



PLAIN_DATA = b"data: "
EVENT_END = b"\n\n"


def plain_data_events(piece: bytes, max_event: int) -> list[bytes] | None:
    """The data of every event in ``piece`` when it holds nothing but whole one-line
    ``data: ...`` events (what every Chat Completions server sends), else ``None``.

    The fast path of a stream: one split per network read instead of a line splitter
    and a parser step per line. It applies only where the result is exactly what
    :class:`LineSplitter` and :class:`SseParser` would give (call it only when both are
    :attr:`idle`); anything else (comments, ``event:`` lines, CR line ends, an event cut
    by the read, one over ``max_event``) returns ``None`` for the general path.
    """
    if not piece.endswith(EVENT_END) or b"\r" in piece:
        return None
    blocks = piece[:-2].split(EVENT_END)
    for block in blocks:
        if not block.startswith(PLAIN_DATA) or b"\n" in block or len(block) > max_event:
            return None
    return [block[6:] for block in blocks]
