"""Live reload: watch the canvas root and tell every open socket to reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
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

    @property
    def clients(self) -> int:
        return len(self._inboxes)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str | None]]:
        """An inbox that receives ``reload`` messages, and ``None`` when the hub closes."""
        inbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
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
        """Ask every socket to close (the server is stopping)."""
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
    """Runs ``watchfiles.awatch`` over the root in a task and broadcasts each batch."""

    RETRY_SECONDS = 1.0
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

    async def _run(self) -> None:
        # watchfiles groups changes until `step` ms pass quietly, or `debounce` ms in all.
        step = min(50, self.debounce_ms)
        while not self._stop.is_set():
            try:
                async for _changes in awatch(
                    self.root, watch_filter=CanvasFilter(self.root), debounce=self.debounce_ms, step=step,
                    stop_event=self._stop, ignore_permission_denied=True,
                ):
                    self.hub.broadcast(RELOAD)
            except Exception as exc:
                # E.g. the root was removed; keep trying so reloads resume when it is back.
                log.warning("canvas: watching %s failed (%s); retrying", self.root, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.RETRY_SECONDS)
