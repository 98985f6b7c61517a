"""Fixtures for the OpenResponses tests: a live server per module and a strict SSE checker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from testsupport.spec import assert_valid, assert_valid_event

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, build_app, default_config, merge, serve_in_thread

# Agents the live tests route to with model="<name>".
RESPONSES_CONFIG: dict[str, Any] = {
    "plugins": {"openresponses": {"enabled": True, "max_body_bytes": 2_000_000,
                                  "media": {"allowed_hosts": ["127.0.0.1"]}}},
    "providers": {
        "t": {"kind": "echo", "mode": "transcript"},
        "words": {"kind": "echo"},
        "vision": {"kind": "echo", "mode": "transcript", "accepts_images": True},
        "thinker": {"kind": "echo", "reasoning": True},
        "slow": {"kind": "echo", "delay_seconds": 0.1},
        "broken": {"kind": "echo", "fail_after_words": 0},
        "flaky": {"kind": "echo", "fail_after_words": 2},
    },
    "agents": {
        "main": {"provider": "t"},
        "words": {"provider": "words"},
        "vision": {"provider": "vision"},
        "thinker": {"provider": "thinker"},
        "slow": {"provider": "slow"},
        "broken": {"provider": "broken"},
        "flaky": {"provider": "flaky"},
    },
}

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@dataclass
class Stream:
    """A parsed SSE response: the events in order and the raw body."""

    events: list[dict[str, Any]]
    raw: bytes
    status: int
    headers: httpx.Headers

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def terminal(self) -> dict[str, Any]:
        return self.events[-1]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def text(self) -> str:
        return "".join(e["delta"] for e in self.of("response.output_text.delta"))


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Parse and check the framing: LF only, ``event:`` equal to the JSON type, ``[DONE]`` last."""
    assert b"\r" not in raw, "the stream must use LF line endings only"
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), "the stream must end with a blank line"
    blocks = [b for b in text.split("\n\n") if b]
    events: list[dict[str, Any]] = []
    done = False
    for block in blocks:
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            continue  # keep-alive comments
        assert not done, f"data after [DONE]: {block!r}"
        if lines == ["data: [DONE]"]:
            done = True
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event = json.loads(lines[1][len("data: "):])
        assert lines[0][len("event: "):] == event["type"], "the event: line must equal the JSON type"
        events.append(event)
    assert done, "the stream must end with data: [DONE]"
    return events


def check_events(events: list[dict[str, Any]]) -> None:
    """Everything a strict client needs from a /v1/responses event stream."""
    assert events, "no events"
    for event in events:
        assert_valid_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[1]["type"] in ("response.in_progress", "response.queued")
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and events[-1] is terminals[0], "exactly one terminal event, last"
    if events[-1]["type"] == "response.failed":
        assert events[-2]["type"] == "error", "an error event precedes response.failed"
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    added: dict[int, dict[str, Any]] = {}
    parts: set[tuple[int, int]] = set()
    done_items: set[int] = set()
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            index = event["output_index"]
            assert index not in added and index == len(added), "output indexes are consecutive"
            item = event["item"]
            added[index] = item
            assert item["status"] == "in_progress"
            if item["type"] == "message":
                assert item["content"] == []
            if item["type"] == "function_call":
                assert item["arguments"] == "" and item["call_id"] and item["name"] and item["id"]
        elif kind == "response.content_part.added":
            assert event["output_index"] in added
            parts.add((event["output_index"], event["content_index"]))
        elif kind in ("response.output_text.delta", "response.output_text.done"):
            assert added[event["output_index"]]["type"] == "message"
            assert (event["output_index"], event["content_index"]) in parts
            assert event["item_id"] == added[event["output_index"]]["id"]
        elif kind.startswith("response.function_call_arguments."):
            assert added[event["output_index"]]["type"] == "function_call"
            assert event["item_id"] == added[event["output_index"]]["id"]
            if kind.endswith(".done"):
                assert event["name"] == added[event["output_index"]]["name"]
        elif kind.startswith("response.reasoning."):
            assert added[event["output_index"]]["type"] == "reasoning"
        elif kind == "response.output_item.done":
            index = event["output_index"]
            assert index in added and index not in done_items
            assert event["item"]["id"] == added[index]["id"]
            done_items.add(index)
    assert done_items == set(added), "every added item is done"
    final = events[-1]["response"]
    assert [i["id"] for i in final["output"]] == [added[i]["id"] for i in sorted(added)]
    for event in events:
        if event["type"] == "response.output_item.done":
            assert final["output"][event["output_index"]] == event["item"]


class Server:
    """A running gateway: its base URL, the kernel, an httpx client and the openai SDK."""

    def __init__(self, base: str, app: Any) -> None:
        self.base = base
        self.app = app
        self.kernel = app.extensions["kernel"]
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=30)
        self.http = httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30)

    def post(self, body: Any, path: str = "/v1/responses", **kwargs: Any) -> httpx.Response:
        """POST with the bearer token; a JSON 200 body is checked against ResponseResource."""
        resp = self.http.post(path, json=body, **kwargs)
        if path == "/v1/responses" and resp.headers.get("content-type", "").startswith("application/json"):
            data = resp.json()
            if "object" in data:
                assert_valid("ResponseResource", data)
        return resp

    def create(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A non-streaming response that must succeed (HTTP 200)."""
        resp = self.post(body, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def stream(self, body: dict[str, Any], **kwargs: Any) -> Stream:
        """A streaming response, framing and every event checked."""
        with self.http.stream("POST", "/v1/responses", json={**body, "stream": True}, **kwargs) as resp:
            raw = resp.read()
        assert resp.status_code == 200, raw
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(raw)
        check_events(events)
        return Stream(events, raw, resp.status_code, resp.headers)

    def runs_of(self, agent: str) -> list[Any]:
        return [run for run in self.kernel.runs.runs.values() if run.turn.agent == agent]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` holds (the server runs in another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The plugin enabled with the agents of :data:`RESPONSES_CONFIG`, served by a real Hypercorn."""
    tmp: Path = tmp_path_factory.mktemp("responses")
    app = build_app(merge(default_config(tmp / "state"), RESPONSES_CONFIG), tmp / "plugins.toml")
    with serve_in_thread(app) as base:
        srv = Server(base, app)
        yield srv
        srv.http.close()
        srv.sdk.close()


@pytest.fixture
def sse() -> Any:
    """``sse.parse(raw_bytes)`` and ``sse.check(events)`` for tests that build streams themselves."""
    from types import SimpleNamespace

    return SimpleNamespace(parse=parse_sse, check=check_events)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server keeping responses, with a second API key ("other") and the gated ``probe`` agent."""
    from .stored_support import STORED_CONFIG, ProbePlugin

    tmp: Path = tmp_path_factory.mktemp("stored")
    app = build_app(merge(default_config(tmp / "state"), STORED_CONFIG), tmp / "plugins.toml",
                    extra_plugins={"probe": ProbePlugin()})
    with serve_in_thread(app) as base:
        srv = Server(base, app)
        yield srv
        srv.http.close()
        srv.sdk.close()


@pytest.fixture
def open_response_store(make_store: Callable[[], Any]) -> Callable[..., Any]:
    """``async with open_response_store(cls=SqlResponseStore) as rs``: a store on a real database
    (a SQLite file, then a fresh PostgreSQL schema: the tests using it run on both backends)."""
    from contextlib import asynccontextmanager

    from plugins.openresponses.storage import SqlResponseStore

    @asynccontextmanager
    async def opened(cls: type[SqlResponseStore] = SqlResponseStore) -> Any:
        store = make_store()
        await store.open()
        rs = cls(store)
        await rs.open()
        try:
            yield rs
        finally:
            await store.close()

    return opened


@pytest.fixture
async def responses(open_response_store: Callable[..., Any]) -> Any:
    """A :class:`SqlResponseStore` on a fresh database (each backend in turn)."""
    async with open_response_store() as rs:
        yield rs
