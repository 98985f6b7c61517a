"""A sliding-window rate limit per hook name (requests per minute)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Allows ``limit`` requests in any 60-second window, separately for each key.

    Memory is bounded by the number of hook names (a fixed, configured set) times the
    limit, because a key's window never holds more than ``limit`` timestamps.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}

    def check(self, key: str, limit: int) -> float | None:
        """Record a request; return None if allowed, else seconds until one would be."""
        now = self._clock()
        window = self._windows.setdefault(key, deque())
        while window and now - window[0] >= WINDOW_SECONDS:
            window.popleft()
        if len(window) >= limit:
            return max(0.0, WINDOW_SECONDS - (now - window[0]))
        window.append(now)
        return None

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        """Whole seconds for ``Retry-After`` (never 0, so clients really wait)."""
        return str(max(1, math.ceil(seconds)))
