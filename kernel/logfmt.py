"""One log record, one line: control characters in log text are escaped.

Log lines carry text that clients control (request paths, ids, model names, hook
payload fields, upstream error messages ...). A line break in any of them would let a
client write a second, forged line (``/x%0a1999-01-01 ... kernel.access: ...``). Rather
than escape each field where it is logged, ``kernel serve`` formats every record (the
kernel's, Hypercorn's, third-party plugins') with :class:`OneLineFormatter`, which
escapes the whole message and the exception messages in tracebacks.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 controls (tab and newline included), DEL, C1 controls (NEL U+0085 among them) and
# the Unicode line and paragraph separators: everything str.splitlines() or a terminal
# would treat as the end of a line, or that could rewrite what is already shown; and the
# bidirectional overrides and isolates, which make a terminal show text in another order.
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A)]
_ESCAPES = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _UNSAFE}

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def escape_control(text: str) -> str:
    """``text`` with every control and line-separator character as ``\\xNN`` / ``\\uNNNN``.

    Idempotent (the result contains none of them), and printable text is unchanged.
    """
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message part is always one line.

    Tracebacks keep their own lines (frames come from the code), but the exception
    messages in them, which may quote client input, are escaped as well.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        if ei[1] is None:
            return super().formatException(ei)
        te = traceback.TracebackException(type(ei[1]), ei[1], ei[2])
        _escape_messages(te, set())
        text = "".join(te.format())
        return text[:-1] if text.endswith("\n") else text


def _escape_messages(te: traceback.TracebackException, seen: set[int]) -> None:
    """Escape the message (and notes) of ``te`` and of every exception chained to it."""
    if id(te) in seen:
        return
    seen.add(id(te))
    message = getattr(te, "_str", None)  # what format_exception_only prints after "Type: "
    if isinstance(message, str):
        te._str = escape_control(message)  # type: ignore[attr-defined]
    notes = getattr(te, "__notes__", None)
    if notes:
        te.__notes__ = [escape_control(str(n)) for n in notes]
    for linked in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or [])):
        if linked is not None:
            _escape_messages(linked, seen)


def configure_logging(level: str | int) -> None:
    """Log to stderr, one escaped line per record, for every logger (``kernel serve``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
