"""Admission to the model: one generation at a time, a bounded queue behind it.

The kernel calls ``admit()`` synchronously in ``runs.start`` before the run's task
exists, and the run only reaches ``stream()`` (where it joins the queue) a moment
later. So ``admit()`` reserves a place: otherwise a burst of requests in one tick would
all pass the check before any of them had joined the queue. A reservation is used up
when its run joins the queue, and expires after a while in case its run never does
(cancelled while waiting for its session, for instance).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

RESERVATION_TTL_SECONDS = 30.0
INITIAL_TURN_SECONDS = 3.0


class Saturated(Exception):
    """The queue is full; ``retry_after`` is a whole number of seconds to wait."""

    def __init__(self, retry_after: int, capacity: int) -> None:
        super().__init__(f"the local model is busy: 1 generating and {capacity - 1} waiting")
        self.retry_after = retry_after


class Gate:
    """A FIFO lock with a bounded waiting line and admission reservations."""

    def __init__(self, max_queue: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_queue = max_queue
        self.capacity = 1 + max_queue
        self.busy = False
        self.waiting = 0
        self._clock = clock
        self._lock = asyncio.Lock()
        self._reserved: deque[float] = deque()
        # Moving average of how long one turn holds the model: the queue advances one
        # place per finished turn, so this is the honest Retry-After.
        self.turn_seconds = INITIAL_TURN_SECONDS

    @property
    def reserved(self) -> int:
        self._expire()
        return len(self._reserved)

    def occupancy(self) -> int:
        """Generating + waiting + admitted-but-not-yet-waiting."""
        return int(self.busy) + self.waiting + self.reserved

    def retry_after(self) -> int:
        """Seconds until a place is likely to free up (1..60)."""
        return max(1, min(60, math.ceil(self.turn_seconds)))

    def admit(self) -> None:
        """Reserve a place, or raise :class:`Saturated` when none is left."""
        if self.occupancy() >= self.capacity:
            raise Saturated(self.retry_after(), self.capacity)
        self._reserved.append(self._clock())

    async def acquire(self) -> None:
        """Wait for the model (FIFO). Raises :class:`Saturated` for a run that was not
        admitted (or whose reservation expired) when the queue is full."""
        if not self._take_reservation() and self.occupancy() >= self.capacity:
            raise Saturated(self.retry_after(), self.capacity)
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        self.busy = True

    def release(self, held_seconds: float | None = None) -> None:
        """Free the model for the next waiter; ``held_seconds`` updates the estimate."""
        if held_seconds is not None:
            self.turn_seconds = 0.7 * self.turn_seconds + 0.3 * held_seconds
        self.busy = False
        self._lock.release()

    def forfeit(self) -> None:
        """Give back an admitted run's place when it ends before joining the queue
        (its model failed to load, or it was cancelled while the model loaded); without
        this the place would stay taken until the reservation expired."""
        self._take_reservation()

    def _take_reservation(self) -> bool:
        self._expire()
        if self._reserved:
            self._reserved.popleft()
            return True
        return False

    def _expire(self) -> None:
        cutoff = self._clock() - RESERVATION_TTL_SECONDS
        while self._reserved and self._reserved[0] < cutoff:
            self._reserved.popleft()
