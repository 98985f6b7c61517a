"""The model's admission gate: one at a time, bounded queue, reservations, Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from plugins.local_model.gate import RESERVATION_TTL_SECONDS, Gate, Saturated


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_admit_reserves_places_up_to_capacity() -> None:
    gate = Gate(max_queue=2)
    for _ in range(3):  # one to generate, two to wait
        gate.admit()
    with pytest.raises(Saturated) as info:
        gate.admit()
    assert info.value.retry_after >= 1
    assert gate.occupancy() == 3


async def test_a_burst_in_one_tick_cannot_overfill_the_queue() -> None:
    # The kernel calls admit() for each request before any of them reaches acquire().
    gate = Gate(max_queue=1)
    gate.admit()
    gate.admit()
    with pytest.raises(Saturated):
        gate.admit()


async def test_reservations_are_used_by_acquire_and_expire() -> None:
    clock = Clock()
    gate = Gate(max_queue=0, clock=clock)
    gate.admit()
    with pytest.raises(Saturated):
        gate.admit()
    clock.now += RESERVATION_TTL_SECONDS + 1  # the admitted run never came
    gate.admit()
    await gate.acquire()  # uses the reservation
    assert gate.busy and gate.reserved == 0
    with pytest.raises(Saturated):
        gate.admit()
    gate.release()
    gate.admit()


async def test_unadmitted_acquire_is_refused_when_full() -> None:
    gate = Gate(max_queue=1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(Saturated):
        await gate.acquire()
    gate.release()
    await waiter
    assert gate.busy and gate.waiting == 0
    gate.release()


async def test_waiters_are_served_in_order_and_a_cancelled_waiter_leaves_the_line() -> None:
    gate = Gate(max_queue=3)
    await gate.acquire()
    order: list[int] = []

    async def take(n: int) -> None:
        await gate.acquire()
        order.append(n)
        gate.release()

    first = asyncio.create_task(take(1))
    quitter = asyncio.create_task(take(2))
    last = asyncio.create_task(take(3))
    await asyncio.sleep(0)
    assert gate.waiting == 3
    quitter.cancel()
    await asyncio.sleep(0)
    assert gate.waiting == 2
    gate.release()
    await asyncio.gather(first, last)
    assert order == [1, 3]
    assert not gate.busy and gate.waiting == 0


async def test_retry_after_follows_how_long_turns_take() -> None:
    gate = Gate(max_queue=0)
    for _ in range(20):
        await gate.acquire()
        gate.release(held_seconds=12.0)
    assert gate.retry_after() == 12
    for _ in range(40):
        await gate.acquire()
        gate.release(held_seconds=0.01)
    assert gate.retry_after() == 1  # never 0: clients must wait a moment
