"""One gateway process per state directory on SQLite, enforced with an advisory file lock.

SQLite is one process's database: a starting process treats whatever the last one left
running as interrupted (kernel.store.leases), which is only right if no other process
runs. (On PostgreSQL several processes share the database and this lock is not taken.) The lock
is ``flock`` on ``<state_dir>/kernel.lock``: the OS drops it when the process dies, so
a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "kernel.lock"


class StateDirBusyError(RuntimeError):
    """Another process holds the state directory."""


class StateDirLock:
    """Hold ``<state_dir>/kernel.lock`` exclusively while the kernel runs."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateDirBusyError` naming the holder's pid."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusyError(
                f"state directory {self.path.parent} is in use by another kernel process (pid {holder}); "
                "run one process per state directory, or give this one its own [kernel] state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
