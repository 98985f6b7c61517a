"""One kernel process per state directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kernel.statelock import LOCK_FILE, StateDirBusyError, StateDirLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(StateDirBusyError, match=rf"in use by another kernel process \(pid {os.getpid()}\)"):
            StateDirLock(tmp_path).acquire()
    finally:
        first.release()
    second = StateDirLock(tmp_path)
    second.acquire()  # released: free again
    second.release()


def test_a_dead_holder_leaves_no_stale_lock(tmp_path):
    # The child takes the lock and dies without releasing it; the OS drops the flock.
    child = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from kernel.statelock import StateDirLock
        StateDirLock(Path({str(tmp_path)!r})).acquire()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    assert (tmp_path / LOCK_FILE).exists()
    lock = StateDirLock(tmp_path)
    lock.acquire()
    lock.release()


async def test_two_kernels_cannot_serve_one_state_directory(make_app):
    sqlite = {"kernel": {"store": {"url": "sqlite"}}}  # the state-directory lock is SQLite's (PostgreSQL: leases)
    first, second = make_app(sqlite), make_app(sqlite)
    async with first.test_app():
        # Quart's test lifespan wraps the startup error; the message is the kernel's.
        with pytest.raises(Exception, match="is in use by another kernel process"):
            async with second.test_app():
                pass
    async with second.test_app():  # the first released it on stop
        pass
