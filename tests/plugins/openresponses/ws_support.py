"""A strict WebSocket-mode client for the tests: every server message checked against the published schemas."""

from __future__ import annotations

import json
from typing import Any

import websockets.sync.client as ws_client
from testsupport.spec import assert_valid, assert_valid_event

from kernel.testing import AUTH_HEADERS

from .conftest import TERMINAL, check_events


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/responses"


def checked(message: str | bytes) -> dict[str, Any]:
    """One server message: a text frame holding one event valid against the spec."""
    assert isinstance(message, str), "every server message is a JSON text message"
    event = json.loads(message)
    if event["type"] == "error":
        assert_valid("WebSocketErrorEvent", event)
    if "sequence_number" in event or event["type"] != "error":
        assert_valid_event(event)
    return event


class Socket:
    """One open connection to ``/v1/responses``."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self._opened = ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS if headers is None
                                         else headers, open_timeout=10, max_size=None)
        self.conn = self._opened.__enter__()
        self.raw: list[str] = []

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def send(self, body: dict[str, Any] | str) -> None:
        self.conn.send(body if isinstance(body, str) else json.dumps({"type": "response.create", **body}))

    def recv(self, timeout: float = 15) -> dict[str, Any]:
        message = self.conn.recv(timeout=timeout)
        self.raw.append(message)  # type: ignore[arg-type]
        return checked(message)

    def events(self) -> list[dict[str, Any]]:
        """Messages up to and including one terminal event, checked like an SSE stream."""
        events = [self.recv()]
        while events[-1]["type"] not in TERMINAL:
            assert not (events[-1]["type"] == "error" and "sequence_number" not in events[-1]), events[-1]
            events.append(self.recv())
        check_events(events)
        return events

    def turn(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        self.send(body)
        return self.events()

    def error(self, body: dict[str, Any] | str) -> dict[str, Any]:
        """Send, and expect one error event (no response) in answer."""
        self.send(body)
        event = self.recv()
        assert event["type"] == "error" and "sequence_number" not in event, event
        return event


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
