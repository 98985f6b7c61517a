"""Quotas in isolation: token buckets, estimates settled, budget periods, header text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kernel.config import ApiKey
from kernel.errors import ApiError
from kernel.types import Limits, Message, TextPart, Turn
from plugins.observability.observer import estimate_tokens
from plugins.observability.quotas import Quotas, duration_text, period_bounds

from .support import FakeClock

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


def key(**limits: object) -> ApiKey:
    return ApiKey(secret="secret-0123456789", **limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0201, "21ms"), (1, "1s"), (1.5, "1.5s"), (59.9321, "59.932s"), (60, "1m0s"), (360, "6m0s"),
    (90.25, "1m30.25s"),
])
def test_duration_text_is_openais_format(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_requests_bucket_refuses_and_refills() -> None:
    clock = FakeClock(NOON)
    quotas = Quotas({"k": key(requests_per_minute=2)}, clock)
    quotas.check_request("k")
    assert quotas.headers("k") == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                                   "x-ratelimit-reset-requests": "30s"}
    quotas.check_request("k")
    with pytest.raises(ApiError) as refused:
        quotas.check_request("k")
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers == {"Retry-After": "30", "retry-after-ms": "30000"}
    clock.advance(29.9)
    with pytest.raises(ApiError):
        quotas.check_request("k")
    clock.advance(0.1)
    quotas.check_request("k")
    assert quotas.headers("k")["x-ratelimit-remaining-requests"] == "0"
    assert quotas.headers("k")["x-ratelimit-reset-requests"] == "1m0s"


def test_keys_without_limits_are_not_counted() -> None:
    quotas = Quotas({"free": key(), "k": key(requests_per_minute=1)}, FakeClock(NOON))
    for _ in range(100):
        quotas.check_request("free")
        quotas.check_request(None)
    assert quotas.headers("free") == {} and quotas.admit("free", 10**9) is None


def test_tokens_are_estimated_then_settled() -> None:
    clock = FakeClock(NOON)
    quotas = Quotas({"k": key(tokens_per_minute=100)}, clock)
    first = quotas.admit("k", 70)
    assert first is not None and quotas.headers("k")["x-ratelimit-remaining-tokens"] == "30"
    with pytest.raises(ApiError) as refused:
        quotas.admit("k", 40)
    assert refused.value.type == "tokens" and refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers["Retry-After"] == "6"  # 10 tokens short at 100/60 per second
    quotas.settle(first, 10)  # it used far less than estimated: 60 come back
    assert quotas.headers("k")["x-ratelimit-remaining-tokens"] == "90"
    assert quotas.admit("k", 40) is not None
    with pytest.raises(ApiError) as too_large:
        quotas.admit("k", 101)
    assert "request too large" in too_large.value.message


def test_settling_more_than_estimated_goes_into_debt() -> None:
    clock = FakeClock(NOON)
    quotas = Quotas({"k": key(tokens_per_minute=60)}, clock)
    quotas.settle(quotas.admit("k", 10), 90)  # type: ignore[arg-type]
    assert quotas.headers("k")["x-ratelimit-remaining-tokens"] == "0"
    with pytest.raises(ApiError) as refused:
        quotas.admit("k", 0)
    assert refused.value.headers["Retry-After"] == "31"  # -30 -> 1 token at 1/s
    clock.advance(31)
    assert quotas.admit("k", 0) is not None


def test_concurrency_cap_frees_on_settle() -> None:
    quotas = Quotas({"k": key(max_concurrent_runs=2)}, FakeClock(NOON))
    held = [quotas.admit("k", 0), quotas.admit("k", 0)]
    with pytest.raises(ApiError) as refused:
        quotas.admit("k", 0)
    assert refused.value.code == "rate_limit_exceeded" and refused.value.headers["Retry-After"] == "1"
    quotas.settle(held[0], 0)  # type: ignore[arg-type]
    assert quotas.admit("k", 0) is not None


@pytest.mark.parametrize(("period", "start", "end_text"), [
    ("day", datetime(2026, 12, 7, 23, 59, 50, tzinfo=UTC), "2026-12-08T00:00:00+00:00"),
    ("month", datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC), "2027-01-01T00:00:00+00:00"),
])
def test_budget_resets_at_the_period_boundary(period: str, start: datetime, end_text: str) -> None:
    clock = FakeClock(start.timestamp())
    quotas = Quotas({"k": key(budget_tokens=100, budget_period=period)}, clock)
    quotas.settle(quotas.admit("k", 50), 95)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as refused:
        quotas.admit("k", 10)
    err = refused.value
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "insufficient_quota")
    assert err.headers == {"Retry-After": "10", "retry-after-ms": "10000"}
    assert end_text in err.message
    clock.advance(9.999)
    with pytest.raises(ApiError):
        quotas.admit("k", 10)
    clock.advance(0.001)
    assert quotas.admit("k", 100) is not None  # a fresh period: the whole budget


def test_period_bounds() -> None:
    assert period_bounds("month", datetime(2027, 2, 14, tzinfo=UTC).timestamp())[0] == "2027-02"
    _, start, end = period_bounds("day", NOON)
    assert end - start == 86400 and start == NOON - 12 * 3600


def test_estimate_counts_text_and_max_output() -> None:
    turn = Turn(agent="main", input=[Message(role="user", parts=[TextPart("x" * 41)])], system="y" * 3,
                limits=Limits(max_output_tokens=7))
    assert estimate_tokens(turn) == 11 + 7  # ceil(44 / 4) + 7


class NoStore:
    """A store that must never be asked (every attribute access fails the test)."""

    shared = True

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the store was touched: {name}")


def test_keys_without_limits_never_touch_a_shared_store() -> None:
    import asyncio

    from kernel import RequestInfo
    from plugins.observability.shared_quotas import TICKET, SharedQuotas

    quotas = SharedQuotas({"free": key(), "k": key(requests_per_minute=1)}, NoStore(), NoStore())  # type: ignore[arg-type]

    async def requests() -> None:
        for principal in ("free", None):
            info = RequestInfo(method="POST", path="/v1/chat/completions", started=0.0, principal=principal)
            await quotas.prepare(info)
            assert TICKET.get() is None and not info.state
            quotas.check_request(principal)
            assert quotas.admit(principal, 10) is None and quotas.headers(principal) == {}

    asyncio.run(requests())
