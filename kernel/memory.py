"""Keep the gateway's resident memory flat under repeated bursts of connections.

Measured (``benchmarks/bench_memory.py``): RSS climbed round after round of 1,000
streams (142 -> 239 MiB over six rounds) with glibc malloc and with jemalloc alike,
so it was not the C allocator. The cause was reference cycles: every connection left
about 200 objects in cycles (Hypercorn's server and protocol, a response builder and its
listeners, the keep-alive timer), which only a full garbage collection frees. Full
collections are rare, so a round's dead connections were freed late and in bulk,
interleaved with live objects, and CPython's small-object pools they occupied stayed
partly used. Those cycles are broken where they are made (kernel/connections.py,
kernel/streaming.py, the openresponses builder); what is left here is cheap upkeep:

- once start-up is over, ``gc.freeze()`` moves everything alive then (modules, the app,
  plugins) out of the collector's sight, so CPython's own full collections stay short;
- every ``interval`` seconds, glibc's ``malloc_trim(0)`` in a worker thread (ctypes lets
  go of the GIL) hands free pages inside the heaps back to the system.

A periodic full collection was tried as well and dropped: with the cycles gone it did not
change RSS, and under a burst of 1,000 streams it took 9% of the gateway's CPU.
``KERNEL_MALLOC_TRIM=0`` turns the trim off, ``KERNEL_GC_INTERVAL=0`` the whole keeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
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
    """``KERNEL_GC_INTERVAL`` seconds between trims (0 turns the keeper off), else ``default``."""
    try:
        return max(0.0, float(os.environ.get("KERNEL_GC_INTERVAL", default)))
    except ValueError:
        return default


async def keep_heap(interval: float) -> None:
    """Run until cancelled: freeze what start-up left alive, then trim every ``interval`` seconds."""
    trim = glibc_trim()
    await asyncio.sleep(interval)
    # Start-up is over (the app's startup ran during the first interval): what lives now
    # lives for the process, so CPython's full collections need not walk it again.
    gc.collect()
    gc.freeze()
    while trim is not None:
        try:
            await asyncio.to_thread(trim)
        except Exception:  # housekeeping never takes the server down
            log.exception("malloc_trim failed; heap trimming stops")
            return
        await asyncio.sleep(interval)


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
