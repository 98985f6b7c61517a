"""Bounded label values: a metric label never takes unbounded client- or upstream-made text."""

from __future__ import annotations

import re

OTHER = "other"
_WORD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class BoundedLabel:
    """Passes through at most ``limit`` distinct well-formed values; the rest become ``other``."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "-"
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or not _WORD.fullmatch(value):
            return OTHER
        self._seen.add(value)
        return value


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def method_label(method: str) -> str:
    """The HTTP method, or ``_OTHER`` (OpenTelemetry's word) for anything a client made up."""
    return method if method in KNOWN_METHODS else "_OTHER"


def status_class(status: int | None) -> str:
    """An HTTP status as a label ("499" when the client left before any status was sent)."""
    return "499" if status is None else str(status)
