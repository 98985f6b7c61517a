"""Retention of stored responses: the ``retention`` duration and the periodic sweep.

A duration is a number with a unit (``"30d"``, ``"12h"``, ``"45m"``, ``"90s"``, ``"2w"``);
``"0"``, ``"none"`` or ``"forever"`` keep responses forever.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("plugins.openresponses")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_FOREVER = ("0", "none", "forever", "never")


def parse_duration(text: str) -> float | None:
    """Seconds for a duration such as ``"30d"``; ``None`` for "keep forever". Raises ValueError."""
    value = text.strip().lower()
    if value in _FOREVER:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit (s, m, h, d, w) such as "
                         "'30d' or '12h', or '0' / 'none' to keep responses forever")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        return None
    return seconds


class Sweeper:
    """Runs ``sweep(cutoff)`` now and every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, sweep: Callable[[float], Awaitable[int]], retention: float, interval: float) -> None:
        self._sweep = sweep
        self.retention = retention
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="openresponses-retention")

    async def stop(self) -> None:
        """Cancel the task and wait for it, so no sweep outlives the store."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _loop(self) -> None:
        while True:
            try:
                removed = await self._sweep(time.time() - self.retention)
                if removed:
                    log.info("retention: deleted %d expired stored response(s)", removed)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed sweep is retried next time, never fatal
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)
