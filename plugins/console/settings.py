"""``[plugins.console]`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSettings(BaseModel):
    """How long a browser session lasts, how often the live-runs page refreshes, how long a WebSocket ticket lives."""

    model_config = ConfigDict(extra="forbid")

    # A signed-in browser stays signed in this long (the cookie's Max-Age and signed expiry).
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    # Seconds between refreshes of the live runs page.
    runs_refresh_seconds: float = Field(2.0, ge=0.5, le=60)
    # A playground WebSocket ticket must be redeemed (the socket opened) within this many seconds.
    websocket_ticket_seconds: float = Field(30.0, ge=1, le=300)
