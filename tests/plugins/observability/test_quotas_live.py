"""Per-key limits on a real server: each limit hit and recovered, with the exact headers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from quart import Quart

from plugins.observability.plugin import observer_of

from .support import FakeClock, scrape, value, wait_until

SECRET = "limited-key-secret-1"
HEADERS = {"Authorization": f"Bearer {SECRET}"}
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


def limited_app(make_app: Callable[..., Quart], clock: FakeClock, **limits: Any) -> Quart:
    app = make_app({
        "kernel": {"auth": {"keys": {"acme": {"secret": SECRET, **limits}}}},
        "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True},
                    "openresponses": {"enabled": True}},
        "providers": {"slow": {"kind": "echo", "delay_seconds": 0.1}},
        "agents": {"slow": {"provider": "slow"}},
    })
    kernel = app.extensions["kernel"]
    observer = observer_of(kernel)
    observer.quotas = observer.quotas.with_clock(clock)  # counted in memory, or in a shared (PostgreSQL) store
    return app


def chat(base: str, text: str = "hello there", *, model: str = "main", **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers=HEADERS, timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": text}], **extra})


def ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith(("x-ratelimit-", "retry-after"))}


def test_requests_per_minute_hit_and_recovered(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(NOON)
    with live_server(limited_app(make_app, clock, requests_per_minute=2)) as base:
        first = chat(base)
        assert first.status_code == 200
        assert ratelimit_headers(first) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                                            "x-ratelimit-reset-requests": "30s"}
        assert ratelimit_headers(chat(base))["x-ratelimit-remaining-requests"] == "0"
        refused = chat(base)
        assert refused.status_code == 429
        assert ratelimit_headers(refused) == {
            "retry-after": "30", "retry-after-ms": "30000", "x-ratelimit-limit-requests": "2",
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s"}
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
        assert "requests_per_minute = 2" in error["message"]
        # Other principals are not limited by this key's quota, and get no ratelimit headers.
        other = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": "Bearer test-token-0123456789"},
                           json={"model": "main", "messages": [{"role": "user", "content": "hi"}]})
        assert other.status_code == 200 and not ratelimit_headers(other)
        clock.advance(30)
        recovered = chat(base)
        assert recovered.status_code == 200
        assert ratelimit_headers(recovered) == {"x-ratelimit-limit-requests": "2",
                                                "x-ratelimit-remaining-requests": "0",
                                                "x-ratelimit-reset-requests": "1m0s"}
        assert value(scrape(base), "agentkernel_rate_limited_total", principal="acme",
                     limit="requests_per_minute") == 1


def test_openai_sdk_sees_a_rate_limit_error(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(NOON)
    with live_server(limited_app(make_app, clock, requests_per_minute=1)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=SECRET, max_retries=0)
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError) as refused:
            client.responses.create(model="main", input="hi")
        err = refused.value
        assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.type == "requests"
        assert err.response.headers["retry-after"] == "60"
        assert err.response.headers["retry-after-ms"] == "60000"
        assert err.response.headers["x-ratelimit-reset-requests"] == "1m0s"
        clock.advance(60)
        assert client.responses.create(model="main", input="hi again").status == "completed"


@contextmanager
def streaming_in_background(base: str, body: dict[str, Any]) -> Iterator[list[str]]:
    """Hold a slow streamed run open in a thread; yields its ``data:`` lines (complete after the block)."""
    started = threading.Event()
    lines_seen: list[str] = []

    def run() -> None:
        with httpx.stream("POST", f"{base}/v1/chat/completions", headers=HEADERS, json=body, timeout=60) as resp:
            for line in resp.iter_lines():
                lines_seen.append(line)
                started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(20)
    try:
        yield lines_seen
    finally:
        thread.join(60)


def test_tokens_per_minute_estimate_then_settle(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(NOON)
    with live_server(limited_app(make_app, clock, tokens_per_minute=100)) as base:
        text = "x " * 20  # 40 characters: 10 estimated tokens of input (20 slow words: 2 s of streaming)
        body = {"model": "slow", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 60,
                "messages": [{"role": "user", "content": text}]}
        with streaming_in_background(base, body) as lines:
            refused = chat(base, text, max_tokens=60)  # 70 wanted, 30 left while the first run holds 70
            assert refused.status_code == 429
            assert ratelimit_headers(refused) == {
                "retry-after": "24", "retry-after-ms": "24000", "x-ratelimit-limit-tokens": "100",
                "x-ratelimit-remaining-tokens": "30", "x-ratelimit-reset-tokens": "42s"}
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
        first_used = json.loads([line for line in lines if line.startswith("data: {")][-1][6:])["usage"]["total_tokens"]
        # Settled with the first run's actual usage (the clock stood still: no refill).
        models = httpx.get(f"{base}/v1/models", headers=HEADERS)
        assert ratelimit_headers(models)["x-ratelimit-remaining-tokens"] == str(100 - first_used)
        clock.advance(60)  # a full minute refills the bucket
        recovered = chat(base, text, max_tokens=60)
        assert recovered.status_code == 200, recovered.text
        used = recovered.json()["usage"]["total_tokens"]
        assert ratelimit_headers(recovered)["x-ratelimit-remaining-tokens"] == str(100 - used)


def test_burst_of_50_against_the_concurrency_cap(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(NOON)
    with live_server(limited_app(make_app, clock, max_concurrent_runs=5)) as base:
        words = " ".join(["w"] * 30)  # 3 s per run: the burst lands while the first five run

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(headers=HEADERS, timeout=60,
                                         limits=httpx.Limits(max_connections=60)) as client:
                return await asyncio.gather(*[
                    client.post(f"{base}/v1/chat/completions",
                                json={"model": "slow", "messages": [{"role": "user", "content": words}]})
                    for _ in range(50)])

        answers = asyncio.run(burst())
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 5 and statuses.count(429) == 45, statuses
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["retry-after"] == "1"
            assert "max_concurrent_runs = 5" in refused.json()["error"]["message"]
        samples = scrape(base)
        assert value(samples, "agentkernel_runs_rejected_total", principal="acme", code="rate_limit_exceeded") == 45
        assert value(samples, "agentkernel_runs_started_total", principal="acme") == 5
        assert chat(base).status_code == 200  # every slot came back


def test_daily_budget_resets_at_midnight(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(datetime(2026, 12, 7, 23, 59, 50, tzinfo=UTC).timestamp())
    with live_server(limited_app(make_app, clock, budget_tokens=12, budget_period="day")) as base:
        spent = 0
        while True:
            answer = chat(base, "a b c")
            if answer.status_code != 200:
                break
            spent += answer.json()["usage"]["total_tokens"]
        assert spent >= 12 - 1  # refused only once the next estimate no longer fits
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        assert answer.headers["retry-after"] == "10" and answer.headers["retry-after-ms"] == "10000"
        assert "2026-12-08T00:00:00+00:00" in error["message"]
        clock.advance(10)
        assert chat(base, "a b c").status_code == 200
    # Budgets are durable: a restart on the same state directory remembers today's spend.
    restarted = limited_app(make_app, clock, budget_tokens=12, budget_period="day")
    with live_server(restarted) as base:
        used = observer_of(restarted.extensions["kernel"]).quotas.keys["acme"].budget_used
        assert used > 0
        wait_until(lambda: chat(base, "a b c").status_code == 429, timeout=30)


def test_monthly_budget_resets_on_the_first(make_app: Callable[..., Quart], live_server: Any) -> None:
    clock = FakeClock(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    with live_server(limited_app(make_app, clock, budget_tokens=5, budget_period="month")) as base:
        assert chat(base, "a b c d e f g h").status_code == 200  # uses more than 5: settled over budget
        refused = chat(base, "a")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "2027-01-01T00:00:00+00:00" in refused.json()["error"]["message"]
        clock.advance(1)
        assert chat(base, "a").status_code == 200


def test_runs_over_a_websocket_count_as_requests(make_app: Callable[..., Quart], live_server: Any) -> None:
    import websockets.sync.client as ws_client

    clock = FakeClock(NOON)
    with live_server(limited_app(make_app, clock, requests_per_minute=2)) as base, ws_client.connect(
            base.replace("http://", "ws://") + "/v1/responses", additional_headers=HEADERS, open_timeout=10) as ws:
        def create(text: str) -> dict[str, Any]:
            ws.send(json.dumps({"type": "response.create", "model": "main", "input": text, "store": False}))
            while True:
                event = json.loads(ws.recv(timeout=15))
                if event["type"] in ("response.completed", "error"):
                    return event

        assert create("one")["type"] == "response.completed"
        assert create("two")["type"] == "response.completed"
        refused = create("three")
        assert refused["type"] == "error" and refused["error"]["code"] == "rate_limit_exceeded"
        clock.advance(30)
        assert create("four")["type"] == "response.completed"
