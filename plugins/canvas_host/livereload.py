"""Live reload: watch the canvas root and tell every open socket to reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import Change, awatch

log = logging.getLogger("plugins.canvas_host")

RELOAD = "reload"
# Directories whose churn never changes what a page shows.
IGNORED_DIRS = frozenset({"node_modules", "__pycache__"})
# Editor and tool droppings: vim swap files and its '4913' write probe, backups ending
# in '~', emacs lock files '.#name', JetBrains safe-write temps.
_IGNORED_NAME = re.compile(r"(^4913$|~$|\.sw[a-z]$|^\.#|\.___jb_\w+___$)")


class ReloadHub:
    """The set of open live-reload sockets, each with a small inbox."""

    def __init__(self) -> None:
        self._inboxes: set[asyncio.Queue[str | None]] = set()
        self.broadcasts = 0  # batches of changes announced (tests wait on this)
        self.closed = False

    @property
    def clients(self) -> int:
        return len(self._inboxes)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str | None]]:
        """An inbox that receives ``reload`` messages, and ``None`` when the hub closes."""
        inbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        if self.closed:  # a socket that slipped in while the gateway stops: close it at once
            inbox.put_nowait(None)
        self._inboxes.add(inbox)
        try:
            yield inbox
        finally:
            self._inboxes.discard(inbox)

    def broadcast(self, message: str = RELOAD) -> None:
        """Queue ``message`` for every socket; one pending reload per socket is enough."""
        self.broadcasts += 1
        for inbox in list(self._inboxes):
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(message)

    def close(self) -> None:
        """Ask every socket to close, now and from now on (the server is stopping)."""
        self.closed = True
        for inbox in list(self._inboxes):
            with contextlib.suppress(asyncio.QueueEmpty):
                inbox.get_nowait()
            inbox.put_nowait(None)


class CanvasFilter:
    """watchfiles filter: skip hidden names, ``node_modules`` and editor temp files.

    Judged on the path *relative to the root*, so a root that itself lives in a hidden
    directory (the default state dir is ``.kernel``) still reports its changes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, change: Change, path: str) -> bool:
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return True
        if not parts:
            return True
        if any(p.startswith(".") or p in IGNORED_DIRS for p in parts):
            return False
        return not _IGNORED_NAME.search(parts[-1])


class Watcher:
    """Runs ``watchfiles.awatch`` over the root in a task and broadcasts each batch.

    ``debounce_ms`` is a quiet period: a batch is announced once that long passes
    without a new change, so a burst (a build, ``git checkout``, a tool writing many
    files) is one reload. A steady stream of changes is still announced at least every
    :attr:`MAX_BATCH_MS`, so pages never wait forever.

    The root may be deleted, recreated or swapped for another folder while the gateway
    runs: the watcher notices (it checks the root's identity after every batch and at
    least every :attr:`ROOT_CHECK_MS`), waits for a root to exist again and watches
    that one, sending a ``reload`` when it does.
    """

    MAX_BATCH_MS = 1600
    ROOT_CHECK_MS = 1000
    RETRY_SECONDS = 1.0
    MAX_RETRY_SECONDS = 30.0
    STOP_SECONDS = 5.0

    def __init__(self, root: Path, hub: ReloadHub, debounce_ms: int) -> None:
        self.root = root
        self.hub = hub
        self.debounce_ms = debounce_ms
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching (call from the serving event loop)."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="canvas-watcher")

    async def stop(self) -> None:
        """Stop the watcher and wait for it; cancel it if it does not stop in time."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, self.STOP_SECONDS)
        except TimeoutError:
            log.warning("canvas: file watcher did not stop within %.0fs; cancelled", self.STOP_SECONDS)
        except Exception:
            log.exception("canvas: file watcher failed while stopping")

    def _root_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the root directory, or None when it is missing."""
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the watcher is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self) -> None:
        failures = 0
        missing_logged = False
        announce = False  # the root came back or was swapped: its content changed
        while not self._stop.is_set():
            identity = self._root_identity()
            if identity is None:
                if not missing_logged:
                    log.warning("canvas: root %s is missing; live reload resumes when it exists again", self.root)
                    missing_logged = True
                announce = True
                await self._pause(self.RETRY_SECONDS)
                continue
            if missing_logged:
                log.info("canvas: root %s is back; watching it again", self.root)
                missing_logged = False
            if announce:
                self.hub.broadcast(RELOAD)
                announce = False
            try:
                if await self._watch(identity):
                    log.info("canvas: root %s was removed or replaced; watching afresh", self.root)
                    announce = True
                failures = 0
            except Exception as exc:
                # E.g. the inotify watch limit; retry with backoff, and say so once, not every second.
                failures += 1
                delay = min(self.RETRY_SECONDS * 2 ** (failures - 1), self.MAX_RETRY_SECONDS)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "canvas: watching %s failed (%s); retrying in %.0fs", self.root, exc, delay)
                await self._pause(delay)

    async def _watch(self, identity: tuple[int, int]) -> bool:
        """Watch until stopped (False) or until the root is no longer ``identity`` (True)."""
        # watchfiles yields once `step` ms pass without a new change, or after
        # `debounce` ms in all; on its timeout it yields an empty set (a root check).
        changes_feed = awatch(
            self.root, watch_filter=CanvasFilter(self.root), step=self.debounce_ms,
            debounce=max(self.MAX_BATCH_MS, 2 * self.debounce_ms), rust_timeout=self.ROOT_CHECK_MS,
            yield_on_timeout=True, stop_event=self._stop, ignore_permission_denied=True,
        )
        async with contextlib.aclosing(changes_feed):
            async for changes in changes_feed:
                if changes:
                    self.hub.broadcast(RELOAD)
                if self._root_identity() != identity:
                    return True
        return False
