"""Fixtures for the openai_upstream tests: a fake upstream and apps pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from quart import Quart
from testsupport.fake_openai import FakeOpenAI

from kernel import Message, RunEvent, TextPart, Turn
from kernel.app import get_kernel
from kernel.runs import RunResult

API_KEY = "sk-test-upstream-secret-4242"
PROVIDER = "up"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI-compatible server for this test."""
    with FakeOpenAI() as server:
        yield server


def upstream_config(base_url: str, **options: Any) -> dict[str, Any]:
    """Config: agent ``main`` answers with an openai_upstream provider named ``up``."""
    provider = {"kind": "openai_upstream", "base_url": base_url, "api_key": API_KEY, "model": "fake-model",
                "backoff_initial": 0.01, "backoff_max": 0.05, **options}
    return {
        "providers": {PROVIDER: provider},
        "agents": {"main": {"provider": PROVIDER}},
        "plugins": {"openai_upstream": {"enabled": True}},
    }


@pytest.fixture
def upstream_app(make_app: Callable[..., Quart], fake: FakeOpenAI) -> Callable[..., Quart]:
    """``upstream_app(**provider_options)`` builds an app whose ``main`` agent uses the fake."""

    def factory(extra: dict[str, Any] | None = None, **options: Any) -> Quart:
        from kernel.testing import merge

        return make_app(merge(upstream_config(fake.base_url, **options), extra or {}))

    return factory


def _user_turn(text: str = "Hi", **fields: Any) -> Turn:
    return Turn(agent="main", input=[Message(role="user", parts=[TextPart(text)])], **fields)


async def _run_turn(app: Quart, turn: Turn) -> tuple[list[RunEvent], RunResult]:
    run = get_kernel(app).runs.start(turn)
    events = [ev async for ev in run.events()]
    return events, await run.wait()


@pytest.fixture
def user_turn() -> Callable[..., Turn]:
    """``user_turn("text", **turn_fields)``: a turn for agent ``main`` with one user message."""
    return _user_turn


@pytest.fixture
def run_turn() -> Callable[[Quart, Turn], Any]:
    """``await run_turn(app, turn)``: start a run through the kernel's run seam and
    return ``(every event, the RunResult)``; call inside ``async with app.test_app()``."""
    return _run_turn


# Retry-After values an upstream may send, with the whole seconds a client should see
# (None: any finite value in range, for a date whose distance depends on the clock).
HOSTILE_RETRY_AFTER = [("inf", "86400"), ("1e999", "86400"), ("garbage", "1"), ("-5", "1"),
                       ("Fri, 31 Dec 9999 23:59:59 GMT", "86400"), ("http-date-in-an-hour", None)]


def finite_retry_after(header: str) -> str:
    """The Retry-After to script: the placeholder for a date an hour from now is filled in."""
    if header == "http-date-in-an-hour":
        import email.utils
        import time

        return email.utils.formatdate(time.time() + 3600, usegmt=True)
    return header
