"""The per-hook sliding window."""

from __future__ import annotations

from plugins.hooks.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_slides_per_key():
    clock = Clock()
    rl = RateLimiter(clock)
    assert rl.check("a", 2) is None
    clock.now += 10
    assert rl.check("a", 2) is None
    assert rl.check("a", 2) == 50.0  # the first request leaves the window 60 s after it came
    assert rl.check("b", 2) is None  # another hook has its own window
    clock.now += 50
    assert rl.check("a", 2) is None
    assert rl.check("a", 2) == 10.0
    clock.now += 10
    assert rl.check("a", 2) is None


def test_refused_requests_do_not_extend_the_wait():
    clock = Clock()
    rl = RateLimiter(clock)
    assert rl.check("a", 1) is None
    for _ in range(5):
        clock.now += 1
        rl.check("a", 1)
    clock.now = 1060.0
    assert rl.check("a", 1) is None


def test_retry_after_header_is_whole_seconds_at_least_one():
    assert RateLimiter.retry_after_header(0.0) == "1"
    assert RateLimiter.retry_after_header(0.2) == "1"
    assert RateLimiter.retry_after_header(59.01) == "60"
