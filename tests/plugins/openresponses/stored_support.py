"""A provider tests can hold mid-run and see cancelled, and the stored-responses test config.

The server runs in another thread, so a :class:`Probe` uses threading events: the
test waits for ``started``, lets the run go on with ``release``, and checks that a
cancel really reached the provider (``cancelled`` and ``closed``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from quart import Quart
from testsupport.spec import assert_valid

from kernel import Finished, Message, ProviderKind, RunEvent, TextDelta, Turn, Usage, hookimpl
from kernel.testing import merge

OTHER_SECRET = "other-secret-0123456789"
OTHER_HEADERS = {"Authorization": f"Bearer {OTHER_SECRET}"}


class Probe:
    """One probe run: the provider says ``before`` words, waits for ``release``, then says ``after`` words."""

    _registry: dict[str, Probe] = {}
    _ids = itertools.count()

    def __init__(self, before: int = 2, after: int = 2) -> None:
        self.key = f"probe{next(self._ids)}"
        self.before = before
        self.after = after
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()
        self.closed = threading.Event()
        self._registry[self.key] = self

    @classmethod
    def find(cls, key: str) -> Probe:
        return cls._registry[key]


class ProbeProvider:
    """Answers the probe named by the newest user message."""

    accepts_images = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def aclose(self) -> None:
        return None

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        last = next(i for i in reversed(turn.input) if isinstance(i, Message))
        probe = Probe.find(last.text.strip())
        try:
            for i in range(probe.before):
                yield TextDelta(f"b{i} ")
            probe.started.set()
            # A threading.Event (set from the test's thread), so it is polled; sleeping keeps it cancellable.
            while not probe.release.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            for i in range(probe.after):
                yield TextDelta(f"a{i} ")
            yield Usage(input_tokens=1, output_tokens=probe.before + probe.after)
            yield Finished("stop")
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        finally:
            probe.closed.set()


class ProbePlugin:
    """Registers the ``probe`` provider kind (an in-process plugin for tests)."""

    @hookimpl
    def register_providers(self) -> list[ProviderKind]:
        return [ProviderKind(kind="probe", factory=lambda name, options, kernel: ProbeProvider(name))]


STORED_CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"other": {"secret": OTHER_SECRET}}}},
    "plugins": {"openresponses": {"enabled": True}},
    "providers": {
        "t": {"kind": "echo", "mode": "transcript"},
        "words": {"kind": "echo"},
    },
    "agents": {
        "main": {"provider": "t"},
        "words": {"provider": "words"},
        "probe": {"provider": "probe"},
    },
}


def stored_app(make_app: Callable[..., Quart], **options: Any) -> Quart:
    """An app like the ``stored`` fixture's, with extra ``[plugins.openresponses]`` options."""
    return make_app(merge(STORED_CONFIG, {"plugins": {"openresponses": options}}),
                    extra_plugins={"probe": ProbePlugin()})


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of a response that must have ``status``, checked against the spec's ``ErrorPayload``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert_valid("ErrorPayload", error)
    assert error["message"] and error["code"], error
    return error
