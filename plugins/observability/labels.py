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


# HTTP methods kept as label values; anything else a client made up is "_OTHER" (OpenTelemetry's word).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
