"""One live MCP client session, owned by its own task and restarted when it breaks.

The MCP SDK is built on anyio: a session's task group must be entered and left by the
same task. Each connection therefore has an *owner* task that opens the
:class:`mcp.Client`, publishes it, and holds it open until closed; runs call tools on the
published client from their own tasks. When the server goes away (a stdio process that
died, an HTTP server that dropped the session), the failing call reports an error and
the next use starts a fresh session (for stdio: a new process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mcp import Client
from mcp.shared.exceptions import MCPError

from kernel.logfmt import escape_control

log = logging.getLogger("plugins.mcp")

# How long closing a session may take before its owner task is cancelled.
CLOSE_TIMEOUT = 5.0


class ConnectionLost(Exception):
    """The server went away during a request; the next use reconnects."""


class McpConnection:
    """A lazily opened, self-healing client session for one server."""

    def __init__(self, label: str, make_client: Callable[[], Client], connect_timeout: float) -> None:
        self.label = label
        self._make_client = make_client
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self.generation = 0  # sessions opened so far (a restart makes it grow)

    async def client(self) -> Client:
        """The open session, opening (or reopening) it when needed."""
        client = self._client
        if client is not None and self._owner is not None and not self._owner.done():
            return client
        async with self._opening:
            if self._client is not None and self._owner is not None and not self._owner.done():
                return self._client
            await self._shutdown_owner()
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[Client] = loop.create_future()
            self._stop = asyncio.Event()
            self._owner = loop.create_task(self._own(ready, self._stop), name=f"mcp:{self.label}")
            try:
                async with asyncio.timeout(self._connect_timeout):
                    client = await asyncio.shield(ready)
            except BaseException:
                await self._shutdown_owner()
                raise
            self._client = client
            self.generation += 1
            if self.generation > 1:
                log.info("mcp server %s: reconnected (session %d)", escape_control(self.label), self.generation)
            return client

    async def _own(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        try:
            async with self._make_client() as client:
                if not ready.done():
                    ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(_unwrap(exc) if isinstance(exc, Exception | BaseExceptionGroup) else exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not isinstance(exc, asyncio.CancelledError | Exception | BaseExceptionGroup):
                raise
            log.warning("mcp server %s: session ended: %s", escape_control(self.label), escape_control(str(exc)))
        finally:
            self._client = None

    def mark_broken(self) -> None:
        """Forget the session so the next use opens a new one (the old one is closed in the background)."""
        self._client = None
        if self._stop is not None:
            self._stop.set()

    async def request(self, call: Callable[[Client], Any]) -> Any:
        """Run ``call(client)`` on the session; a broken connection raises :class:`ConnectionLost`."""
        client = await self.client()
        try:
            return await call(client)
        except MCPError as exc:
            if "connection closed" in str(exc).lower():
                self.mark_broken()
                raise ConnectionLost(f"the MCP server {self.label!r} closed the connection") from None
            raise
        except (OSError, EOFError) as exc:
            self.mark_broken()
            raise ConnectionLost(f"lost the connection to MCP server {self.label!r}: {exc}") from None

    async def _shutdown_owner(self) -> None:
        owner, stop = self._owner, self._stop
        self._owner = self._stop = None
        self._client = None
        if owner is None:
            return
        if stop is not None:
            stop.set()
        if not owner.done():
            try:
                await asyncio.wait_for(asyncio.shield(owner), CLOSE_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                owner.cancel()
            except Exception:
                pass

    async def aclose(self) -> None:
        """Close the session (for stdio: stop the process)."""
        async with self._opening:
            await self._shutdown_owner()


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
