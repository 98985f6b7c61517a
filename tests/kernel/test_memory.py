"""Memory upkeep: finished connections and responses leave no reference cycles; the heap keeper."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter

import httpx

from kernel import memory
from kernel.testing import AUTH_HEADERS

# Types that, before the cycles were broken, each finished stream left to the collector.
# (asyncio's own transport cycle is broken best-effort and other tests' sockets may close
# meanwhile, so transports are not counted here.)
WATCHED = {"GatewayTCPServer", "H11Protocol", "HTTPStream", "ResponseBuilder", "EventFollower", "LiveResponse",
           "_SilenceWatch"}


def cyclic_garbage() -> Counter[str]:
    """What a full collection would free now, by type name (only objects in cycles)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return found


def test_finished_streams_and_connections_leave_no_cycles(make_app, live_server):
    app = make_app({"plugins": {"openresponses": {"enabled": True}}})
    with live_server(app) as base:
        for index in range(12):
            body = {"model": "agent:main", "input": f"word {index} and more", "stream": index % 2 == 0,
                    "store": index % 3 != 0}
            # A new connection each time, closed by the client, as a burst of clients would.
            with httpx.Client(base_url=base, headers=AUTH_HEADERS) as client:
                assert client.post("/v1/responses", json=body).status_code == 200
        cyclic_garbage()  # whatever start-up and the first requests left
        gc.disable()  # or a collection during the requests would hide the cycles they leave
        try:
            for index in range(12):
                body = {"model": "agent:main", "input": f"again {index}", "stream": index % 2 == 0}
                with httpx.Client(base_url=base, headers=AUTH_HEADERS) as client:
                    assert client.post("/v1/responses", json=body).status_code == 200
            time.sleep(0.2)  # the server's side of the last connection closes
            left = cyclic_garbage()
        finally:
            gc.enable()
    assert not {name: n for name, n in left.items() if name in WATCHED}, left.most_common(20)


def test_glibc_trim_is_found_and_can_be_switched_off(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    trim = memory.glibc_trim()
    assert trim is not None  # this test machine runs glibc
    assert trim() in (0, 1)
    monkeypatch.setenv("KERNEL_MALLOC_TRIM", "0")
    assert memory.glibc_trim() is None
    monkeypatch.setenv("KERNEL_MALLOC_TRIM", "1")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert memory.glibc_trim() is None


async def test_the_keeper_freezes_once_then_trims_on_its_interval(monkeypatch):
    trims: list[int] = []
    frozen: list[bool] = []
    monkeypatch.setattr(memory, "glibc_trim", lambda: lambda: trims.append(1) or 1)
    monkeypatch.setattr(memory.gc, "freeze", lambda: frozen.append(True))
    async with memory.heap_keeper(0.02):
        for _ in range(500):  # a busy machine may be slow to run the worker thread
            if len(trims) >= 3:
                break
            await asyncio.sleep(0.01)
    assert frozen == [True]
    assert len(trims) >= 3
    count = len(trims)
    await asyncio.sleep(0.05)
    assert len(trims) == count  # stopped with the block


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("KERNEL_GC_INTERVAL", "0")
    assert memory.interval_from_env() == 0
    monkeypatch.setenv("KERNEL_GC_INTERVAL", "2.5")
    assert memory.interval_from_env() == 2.5
    monkeypatch.setenv("KERNEL_GC_INTERVAL", "soon")
    assert memory.interval_from_env() == memory.DEFAULT_INTERVAL_SECONDS
