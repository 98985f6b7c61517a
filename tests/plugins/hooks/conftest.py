"""Fixtures for the hooks plugin: a real server plus a handle on its kernel and loop."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict
from quart import Quart

from kernel import Finished, Item, Message, ProviderKind, RunEvent, TextDelta, Turn, Usage, hookimpl
from kernel.runtime import Kernel
from kernel.sessions import main_session_key
from kernel.testing import merge

HOOK_TOKEN = "hook-secret-0123456789abcdef"
HOOK_HEADERS = {"Authorization": f"Bearer {HOOK_TOKEN}"}
REPLY = "Done: 2 new mails\nfrom Bob and Carol"
TERMINAL = {"completed", "incomplete", "failed", "cancelled"}
MAIN_KEY = main_session_key("main")
BLOCK = re.compile(
    r'<<<EXTERNAL_UNTRUSTED_CONTENT id="([0-9a-f]{16})">>>\n(.*?)\n<<<END_EXTERNAL_UNTRUSTED_CONTENT id="\1">>>',
    re.DOTALL,
)


class ReplyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class FixedReply:
    """A provider answering every turn with a configured text (clean summary lines in tests)."""

    accepts_images = False

    def __init__(self, name: str, options: ReplyOptions) -> None:
        self.name = name
        self.text = options.text
        self.turns: list[Turn] = []  # what the provider was asked (model overrides, system text)

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        self.turns.append(turn)
        yield TextDelta(self.text)
        yield Usage(input_tokens=3, output_tokens=len(self.text.split()))
        yield Finished()

    async def aclose(self) -> None:
        return None


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hang:
    """A provider that says one word and then waits forever; it notes when its stream is stopped."""

    accepts_images = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0
        self.stopped = 0

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        self.started += 1
        try:
            yield TextDelta("started")
            await asyncio.Event().wait()  # never set: only cancellation ends this
            yield Finished()
        finally:
            self.stopped += 1

    async def aclose(self) -> None:
        return None


class FixedReplyPlugin:
    @hookimpl
    def register_providers(self) -> list[ProviderKind]:
        return [
            ProviderKind("fixed_reply", lambda name, opts, kernel: FixedReply(name, opts), ReplyOptions),
            ProviderKind("hang", lambda name, opts, kernel: Hang(name), NoOptions),
        ]


class LoopTap:
    """A one-test plugin that remembers the server's event loop (to call kernel services)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        self.loop = asyncio.get_running_loop()


@dataclass
class Hub:
    """A running gateway with the hooks plugin, and helpers to look inside it."""

    app: Quart
    base: str
    client: httpx.Client
    tap: LoopTap

    @property
    def kernel(self) -> Kernel:
        return self.app.extensions["kernel"]

    @property
    def service(self) -> Any:
        """The plugin's HooksService."""
        return self.app.extensions["hooks"]

    def provider(self, agent: str) -> Any:
        """The provider instance behind ``agent``."""
        return self.kernel.provider_for(self.kernel.agents.get(agent))

    def followers_idle(self) -> bool:
        """True once every run follower finished (records written, summaries posted)."""
        return not self.service._followers

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop (kernel services belong to it)."""
        assert self.tap.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.tap.loop).result(timeout=10)

    def transcript(self, key: str) -> list[Item]:
        """A hook session's transcript (hook sessions belong to the hooks principal)."""
        return self.call(self.kernel.sessions.load(key, principal="hooks"))

    def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.client.post(path, json=json, headers=HOOK_HEADERS if headers is None else headers, **kw)

    def run_status(self, run_id: str) -> httpx.Response:
        return self.client.get(f"/hooks/runs/{run_id}", headers=HOOK_HEADERS)

    def wait_run(self, run_id: str, timeout: float = 10) -> dict[str, Any]:
        """Poll ``GET /hooks/runs/<id>`` until the run ended; return the final body."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.run_status(run_id)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in TERMINAL and body["finished_at"] is not None:
                return body
            assert time.monotonic() < deadline, f"run {run_id} still {body['status']}"
            time.sleep(0.02)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.02)


def texts(items: list[Item]) -> list[tuple[str, str]]:
    """(role, text) of the messages in a transcript."""
    return [(i.role, i.text) for i in items if isinstance(i, Message)]


def hooks_config(options: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The main agent echoes its whole view (transcript mode); hooks on with HOOK_TOKEN."""
    base = {
        "providers": {
            "tx": {"kind": "echo", "mode": "transcript"},
            "slow": {"kind": "echo", "delay_seconds": 0.1},
            "brisk": {"kind": "echo", "delay_seconds": 0.01},
            "reply": {"kind": "fixed_reply", "text": REPLY},
            "hang": {"kind": "hang"},
        },
        "agents": {
            "main": {"provider": "tx"}, "slow": {"provider": "slow"}, "brisk": {"provider": "brisk"},
            "plain": {"provider": "echo"}, "reply": {"provider": "reply"}, "hang": {"provider": "hang"},
        },
        "plugins": {"hooks": {"enabled": True, "token": HOOK_TOKEN, **(options or {})}},
    }
    return merge(base, config or {})


class Kit:
    """Constants and helpers for the tests (fixtures, since test modules cannot import conftest)."""

    token = HOOK_TOKEN
    reply = REPLY
    headers = HOOK_HEADERS
    main_key = MAIN_KEY
    block = BLOCK
    texts = staticmethod(texts)
    config = staticmethod(hooks_config)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def hooks_server(make_app: Callable[..., Quart], live_server: Callable[[Quart], Any]) -> Callable[..., Any]:
    """``with hooks_server({"rate_limit_per_minute": 2}) as hub: hub.post(...)``."""

    @contextmanager
    def start(options: dict[str, Any] | None = None, *, config: dict[str, Any] | None = None,
              extra_plugins: dict[str, object] | None = None) -> Iterator[Hub]:
        tap = LoopTap()
        plugins = {"looptap": tap, "fixedreply": FixedReplyPlugin(), **(extra_plugins or {})}
        app = make_app(hooks_config(options, config), extra_plugins=plugins)
        with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
            yield Hub(app, base, client, tap)

    return start
