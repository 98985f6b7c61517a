"""Per-key rate limits and budgets: ``[kernel.auth.keys.NAME]`` requests_per_minute,
tokens_per_minute, max_concurrent_runs, budget_tokens (per UTC day or month).

Rates are token buckets that refill continuously (a key with 60 requests per minute
gets one back every second, up to 60), so a burst is allowed up to the limit and the
``x-ratelimit-reset-*`` headers say when the bucket is full again, as OpenAI's do.
Token limits are charged an estimate when a run starts and settled with the run's
actual usage when it ends. :class:`Quotas` keeps the state in this process (the SQLite
store: one process); :class:`plugins.observability.shared_quotas.SharedQuotas` counts in a
PostgreSQL store shared by several processes, with the same answers (the refusals below
are built once for both). The clock is injected so tests cross period boundaries
without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kernel.config import ApiKey
from kernel.errors import ApiError


class Bucket:
    """A token bucket of ``capacity`` refilling ``capacity`` per minute."""

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.at = now

    def available(self, now: float) -> float:
        """The level after refilling up to ``now`` (negative after an overshoot is settled)."""
        if now > self.at:
            self.level = min(float(self.capacity), self.level + (now - self.at) * self.rate)
            self.at = now
        return self.level

    def take(self, amount: float, now: float) -> None:
        """Charge ``amount`` (negative gives back; never above capacity)."""
        self.level = min(float(self.capacity), self.available(now) - amount)

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available."""
        return max(0.0, (amount - self.available(now)) / self.rate)

    def reset_in(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return self.wait_for(self.capacity, now)


# The last bounds computed per period kind: every run of a key with a budget asks, and
# the datetime arithmetic below was a fifth of what limits cost per request.
_LAST_BOUNDS: dict[str, tuple[str, float, float]] = {}


def period_bounds(period: str, now: float) -> tuple[str, float, float]:
    """The budget period containing ``now``: its id ("2026-12-07" / "2026-12"), start and end (UTC)."""
    last = _LAST_BOUNDS.get(period)
    if last is not None and last[1] <= now < last[2]:
        return last
    bounds = _LAST_BOUNDS[period] = _period_bounds(period, now)
    return bounds


def _period_bounds(period: str, now: float) -> tuple[str, float, float]:
    day = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        end_ts = start.timestamp() + 86400
        return start.strftime("%Y-%m-%d"), start.timestamp(), end_ts
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), start.timestamp(), end.timestamp()


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1.5s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms`` (the openai SDK reads it first)."""
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


@dataclass
class KeyState:
    """What one limited key has used."""

    limits: ApiKey
    requests: Bucket | None
    tokens: Bucket | None
    active: int = 0
    budget_period: str = ""
    budget_used: int = 0


def requests_refused(principal: str, bucket: Bucket, now: float) -> ApiError:
    """429 for ``requests_per_minute``."""
    wait = bucket.wait_for(1, now)
    return ApiError(
        429, f"rate limit reached for key {principal!r}: requests_per_minute = {bucket.capacity}; "
        f"try again in {duration_text(wait)}",
        type="requests", code="rate_limit_exceeded", headers=retry_headers(wait))


def concurrency_refused(principal: str, limit: int) -> ApiError:
    """429 for ``max_concurrent_runs``."""
    return ApiError(
        429, f"rate limit reached for key {principal!r}: max_concurrent_runs = "
        f"{limit} runs are in progress; try again when one has finished",
        type="requests", code="rate_limit_exceeded", headers=retry_headers(1))


def check_tokens(principal: str, bucket: Bucket, estimate: int, now: float) -> None:
    """Raise the 429 for ``tokens_per_minute`` when ``estimate`` does not fit (the bucket is not charged)."""
    if estimate > bucket.capacity:
        raise ApiError(
            429, f"request too large for key {principal!r}: tokens_per_minute = {bucket.capacity}, "
            f"this request needs about {estimate} tokens; send less input or a smaller "
            "max_output_tokens", type="tokens", code="rate_limit_exceeded",
            headers=retry_headers(bucket.reset_in(now)))
    needed = max(estimate, 1)
    if bucket.available(now) < needed:
        wait = bucket.wait_for(needed, now)
        raise ApiError(
            429, f"rate limit reached for key {principal!r}: tokens_per_minute = {bucket.capacity}, "
            f"requested about {estimate}, remaining {max(0, math.floor(bucket.available(now)))}; "
            f"try again in {duration_text(wait)}",
            type="tokens", code="rate_limit_exceeded", headers=retry_headers(wait))


def check_budget(principal: str, state: KeyState, estimate: int, now: float) -> str:
    """Start a new period when ``now`` left the last one; raise the 429 for ``budget_tokens``
    when ``estimate`` does not fit. Returns the period's id (nothing is charged)."""
    limits = state.limits
    assert limits.budget_tokens is not None
    period, _, end = period_bounds(limits.budget_period, now)
    if state.budget_period != period:
        state.budget_period, state.budget_used = period, 0
    if state.budget_used + estimate > limits.budget_tokens or state.budget_used >= limits.budget_tokens:
        raise ApiError(
            429, f"key {principal!r} exceeded its token budget: budget_tokens = {limits.budget_tokens} "
            f"per {limits.budget_period}, used {state.budget_used}, this request needs about {estimate}; "
            f"the budget resets at {datetime.fromtimestamp(end, UTC).isoformat()}",
            type="insufficient_quota", code="insufficient_quota", headers=retry_headers(end - now))
    return period


@dataclass(frozen=True)
class Reservation:
    """What an admitted run was charged, to be settled when it ends."""

    principal: str
    estimate: int
    period: str
    slot: str | None = None  # the concurrency slot's row in a shared store


class Quotas:
    """Counts and refuses, per key; every method is synchronous and O(1)."""

    #: Counts in a store shared by several processes (see SharedQuotas); here: in this process.
    shared = False

    def __init__(self, keys: dict[str, ApiKey], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        now = clock()
        self.keys: dict[str, KeyState] = {
            name: KeyState(
                limits=key,
                requests=Bucket(key.requests_per_minute, now) if key.requests_per_minute else None,
                tokens=Bucket(key.tokens_per_minute, now) if key.tokens_per_minute else None,
            )
            for name, key in keys.items() if key.has_limits
        }

    def __bool__(self) -> bool:
        return bool(self.keys)

    def with_clock(self, clock: Callable[[], float]) -> Quotas:
        """The same limits, fresh, on another clock (tests inject one before serving)."""
        return Quotas({name: state.limits for name, state in self.keys.items()}, clock)

    def budgeted(self) -> dict[str, str]:
        """Keys with a token budget and their period ("day" / "month")."""
        return {name: s.limits.budget_period for name, s in self.keys.items() if s.limits.budget_tokens}

    def load_budget(self, principal: str, used: int) -> None:
        """Start the current period at ``used`` tokens (read from durable usage at startup)."""
        state = self.keys[principal]
        state.budget_period = period_bounds(state.limits.budget_period, self.clock())[0]
        state.budget_used = used

    # ------------------------------------------------------------------ requests

    def check_request(self, principal: str | None) -> None:
        """Count one request against ``requests_per_minute``; 429 when none is left."""
        state = self.keys.get(principal) if principal else None
        if state is None or state.requests is None or principal is None:
            return
        now = self.clock()
        bucket = state.requests
        if bucket.available(now) < 1:
            raise requests_refused(principal, bucket, now)
        bucket.take(1, now)

    # ------------------------------------------------------------------ runs

    def admit(self, principal: str | None, estimate: int) -> Reservation | None:
        """Admit a run estimated at ``estimate`` tokens, or raise a 429 naming the limit."""
        state = self.keys.get(principal) if principal else None
        if state is None or principal is None:
            return None
        now = self.clock()
        limits = state.limits
        if limits.max_concurrent_runs is not None and state.active >= limits.max_concurrent_runs:
            raise concurrency_refused(principal, limits.max_concurrent_runs)
        period = self.check_charge(principal, state, estimate, now)
        state.active += 1
        return Reservation(principal, estimate, period)

    @staticmethod
    def check_charge(principal: str, state: KeyState, estimate: int, now: float) -> str:
        """Check ``tokens_per_minute`` and the budget for ``estimate`` (429 when it does not
        fit), then charge both; returns the budget period's id ("" without a budget)."""
        bucket = state.tokens
        if bucket is not None:
            check_tokens(principal, bucket, estimate, now)
        period = ""
        if state.limits.budget_tokens is not None:
            period = check_budget(principal, state, estimate, now)
            state.budget_used += estimate
        if bucket is not None:
            bucket.take(estimate, now)
        return period

    def settle(self, reservation: Reservation, actual: int) -> None:
        """A run ended having used ``actual`` tokens: correct the estimate, free its slot."""
        state = self.keys.get(reservation.principal)
        if state is None:
            return
        state.active = max(0, state.active - 1)
        self.settle_charge(state, reservation, actual - reservation.estimate, self.clock())

    @staticmethod
    def settle_charge(state: KeyState, reservation: Reservation, difference: int, now: float) -> None:
        """Correct the tokens bucket and the budget by ``difference`` (actual - estimate)."""
        if state.tokens is not None:
            state.tokens.take(difference, now)
        if reservation.period and state.budget_period == reservation.period:
            state.budget_used = max(0, state.budget_used + difference)

    # ------------------------------------------------------------------ headers

    def headers(self, principal: str | None) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for a key with rate limits ({} otherwise)."""
        state = self.keys.get(principal) if principal else None
        if state is None:
            return {}
        now = self.clock()
        out: dict[str, str] = {}
        for kind, bucket in (("requests", state.requests), ("tokens", state.tokens)):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{kind}"] = str(bucket.capacity)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.available(now))))
            out[f"x-ratelimit-reset-{kind}"] = duration_text(bucket.reset_in(now))
        return out
