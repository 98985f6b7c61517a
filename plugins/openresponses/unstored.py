"""Ids of this process's recent ``store: false`` responses, so chaining onto one or reading it
back says why it is not there.

They used to be written to the database as tombstone rows: one insert per request that
stores nothing, which cost 22-28% of the gateway's throughput on the cheapest requests
(benchmarks/bench_table.py: echo 0.54 -> 0.70 of bare Quart+Hypercorn without them). The
ids are kept in memory instead, bounded (the oldest are forgotten first). After a restart,
or on another replica, such an id is simply not found, and the 404 says it may have been
created with ``store: false``.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_REMEMBERED = 100_000  # ~10 MB at most
REASON = "it was created with store: false"


class UnstoredIds:
    """A bounded map of response id -> owner for responses that were not stored."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def add(self, response_id: str, owner: str) -> None:
        self._owners[response_id] = owner
        if len(self._owners) > self._limit:
            self._owners.popitem(last=False)

    def reason(self, response_id: str, owner: str) -> str | None:
        """Why ``owner``'s ``response_id`` is not stored, or None (unknown here, or another owner's)."""
        return REASON if self._owners.get(response_id) == owner else None
