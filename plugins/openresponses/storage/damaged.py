"""Stored rows that cannot be decoded: served as failed responses, never as a 500.

A row written by older code (a request nested deeper than the decoder handles, say)
or damaged on disk must not stop the gateway from starting or answering: startup
recovery and every read decode through :func:`loads`, and a row that fails becomes
a failed response whose error says why. Each damaged id is logged once per process.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from plugins.openresponses.resource import ResponseParams, response_resource

log = logging.getLogger("plugins.openresponses")
DAMAGED_MESSAGE = ("this stored response is damaged: its record cannot be decoded ({why}); it is "
                   "reported as failed and cannot be continued")
_logged: set[str] = set()


class DamagedRecordError(Exception):
    """A stored JSON column that cannot be decoded."""


def loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise DamagedRecordError("nested too deeply to decode") from None
    except ValueError as exc:
        raise DamagedRecordError(f"invalid JSON: {exc}") from None


def report(response_id: str, why: str) -> None:
    if response_id not in _logged:
        _logged.add(response_id)
        log.error("stored response %s is damaged (%s); serving it as failed", response_id, why)


def failed_resource(response_id: str, created_at: float, previous_response_id: str | None,
                    why: str) -> dict[str, Any]:
    """A schema-valid failed ``ResponseResource`` standing in for a damaged record."""
    return response_resource(
        ResponseParams(previous_response_id=previous_response_id), response_id=response_id,
        created_at=int(created_at), status="failed", output=[],
        error={"code": "server_error", "message": DAMAGED_MESSAGE.format(why=why), "type": "server_error",
               "param": None},
    )
