"""Keep the gateway's resident memory flat under repeated bursts of connections.

Measured (``benchmarks/bench_memory.py``): RSS climbed round after round of 1,000
streams (142 -> 239 MiB over six rounds) with glibc malloc and with jemalloc alike,
so it is not the C allocator. The cause is reference cycles: every connection leaves
about 200 objects in cycles (Hypercorn's server, protocol, stream and task group point
at each other through bound methods), which only a full garbage collection frees. Full
collections are rare, so a round's dead connections are freed late and in bulk,
interleaved with live objects, and CPython's small-object pools they occupied stay
partly used and cannot go back to the system. Collecting on a steady clock frees them
while their pools are still reusable; with it, RSS stays within a few percent of the
first round's.

Every ``interval`` seconds the keeper runs a full collection (a few milliseconds: the
objects alive since startup are frozen out of it with ``gc.freeze()``), then glibc's
``malloc_trim(0)`` in a worker thread to hand free pages back. ``KERNEL_MALLOC_TRIM=0``
turns the trim off, ``KERNEL_GC_INTERVAL=0`` the collections (to measure without them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

log = logging.getLogger("kernel")

DEFAULT_INTERVAL_SECONDS = 10.0


def glibc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of the running process's glibc, or None where there is none."""
    if os.environ.get("KERNEL_MALLOC_TRIM", "1") == "0":
        return None
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "mimalloc" in preload:
        return None  # another allocator owns malloc: glibc's trim would find nothing to return
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def interval_from_env(default: float = DEFAULT_INTERVAL_SECONDS) -> float:
    """``KERNEL_GC_INTERVAL`` seconds (0 turns the collections off), else ``default``."""
    try:
        return max(0.0, float(os.environ.get("KERNEL_GC_INTERVAL", default)))
    except ValueError:
        return default


async def keep_heap(interval: float) -> None:
    """Run until cancelled: a full collection then a trim, every ``interval`` seconds."""
    trim = glibc_trim()
    frozen = False
    while True:
        await asyncio.sleep(interval)
        if not frozen:
            # Startup is over (the app's startup ran during the first interval): what lives
            # now lives for the process, so later collections need not walk it again.
            gc.collect()
            gc.freeze()
            frozen = True
        started = time.perf_counter()
        collected = gc.collect()
        took = time.perf_counter() - started
        if took > 0.05:
            log.debug("full garbage collection: %d objects in %.0f ms", collected, took * 1000)
        if trim is not None:
            try:
                await asyncio.to_thread(trim)
            except Exception:  # housekeeping never takes the server down
                log.exception("malloc_trim failed; heap trimming stops")
                trim = None


@contextlib.asynccontextmanager
async def heap_keeper(interval: float | None = None) -> AsyncIterator[None]:
    """Keep the heap in the background for the duration of the ``async with`` block."""
    interval = interval_from_env() if interval is None else interval
    task = asyncio.get_running_loop().create_task(keep_heap(interval)) if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
