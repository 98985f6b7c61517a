"""Connection hygiene under Hypercorn: a connection cap, header deadlines, prompt closes,
and one ``send`` per loop iteration instead of one per piece of a response.

Hypercorn's asyncio ``TCPServer`` gives every connection an idle timer (the keep-alive
timeout) and, on its own, has three gaps that a hostile or merely careless client finds:

* **CLOSE-WAIT**: when the client closes an idle keep-alive connection, the server keeps
  its end open until the idle timer fires (the timer task holds the connection's task
  group open), so every one-shot client leaves a descriptor behind for the whole
  keep-alive timeout: 200 clients, 200 sockets in CLOSE-WAIT for 75 s.
* **No connection cap**: past the open-files limit, ``accept`` fails with EMFILE and
  every client, including the health check, is stuck in the listen queue.
* **Slowloris**: the idle timer is the only deadline for a request's head; a client that
  drips a header byte now and then holds its connection for the whole keep-alive time.

:class:`GatewayTCPServer` closes those gaps in the one place that sees every connection.
``worker_serve`` builds its connection handler from the name ``TCPServer`` in
``hypercorn.asyncio.run``; :func:`install` points that name at the subclass, which
behaves exactly like Hypercorn's own for a config that carries no :class:`ConnectionGuard`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from ssl import SSLError
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
import hypercorn.protocol as hypercorn_protocol
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated

from kernel.chunk_framing import GatewayH11Protocol

log = logging.getLogger("kernel.connections")

# The attribute of a Hypercorn Config that carries the guard (absent: Hypercorn's behaviour).
GUARD_ATTRIBUTE = "kernel_connection_guard"
# How long a refused connection may keep sending its request before it is closed: reading
# it first lets the client see the 503 instead of a reset.
REFUSAL_DRAIN_SECONDS = 1.0
REFUSAL_DRAIN_BYTES = 64 * 1024
# Queued outgoing bytes past this are written at once rather than at the end of the iteration.
COALESCE_FLUSH_BYTES = 64 * 1024
# Descriptors kept for everything that is not a client connection (store, model, logs).
FD_RESERVE = 128
REFUSAL_BODY = json.dumps({"error": {
    "message": "the gateway has reached its connection limit ([kernel] max_connections); retry shortly",
    "type": "server_error", "param": None, "code": "too_many_connections",
}}).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(REFUSAL_BODY)).encode() + b"\r\n\r\n" + REFUSAL_BODY
)


class ThrottledLog:
    """Log a recurring condition at most once per ``interval``, with how often it happened."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: Any) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval`` ago; True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d more since the last such line)"
            args = (*args, suppressed)
        self.logger.warning(message, *args)
        return True


@dataclass
class ConnectionGuard:
    """The limits every connection of one server is held to, and the count of open ones."""

    max_connections: int
    header_timeout: float
    keep_alive_timeout: float
    open: int = 0
    refused: int = 0
    head_timeouts: int = 0
    throttled: ThrottledLog = field(default_factory=lambda: ThrottledLog(log))


class _FinishedProtocol:
    """Stands in for the protocol of a connection whose ``run`` has returned."""

    async def handle(self, event: Any) -> None:
        return None


_FINISHED = _FinishedProtocol()


class GatewayTCPServer(TCPServer):
    """Hypercorn's TCPServer with the guard's cap and deadlines, closing on the client's EOF."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: ConnectionGuard | None = getattr(self.config, GUARD_ATTRIBUTE, None)
        # The idle deadline (a timer, not a task: see _arm_idle) and what it is waiting for.
        self._idle_timer: asyncio.TimerHandle | None = None
        self._waiting_for_head = False  # keep-alive phase over: the next head has begun
        self._head_started = False  # a byte of a request head arrived on this idle connection
        self._fresh = True  # no request received yet on this connection
        # Outgoing bytes of this loop iteration, written in one send (see protocol_send).
        self._unsent: list[bytes] = []
        self._unsent_bytes = 0

    async def run(self) -> None:
        guard = self.guard
        if guard is None:
            await super().run()
            return
        if guard.open >= guard.max_connections:
            guard.refused += 1
            guard.throttled.warning(
                "cap", "refusing connections with 503: %d are open, the limit is [kernel] max_connections = %d",
                guard.open, guard.max_connections)
            await self._refuse()
            return
        guard.open += 1
        try:
            await super().run()
        finally:
            guard.open -= 1
            self._release()

    def _release(self) -> None:
        """Break the reference cycle a finished connection leaves behind.

        Hypercorn's protocol holds this server's bound ``protocol_send`` and this server
        holds the protocol, so a closed connection (about 200 objects with its stream and
        task group) waited for a full garbage collection; under bursts, rounds of dead
        connections freed late and in bulk left CPython's memory pools fragmented and RSS
        climbing (benchmarks/bench_memory.py). A task of the app may still be finishing
        (a shutdown cancels it), so the protocol is swapped for one that ignores events
        rather than removed.
        """
        self.protocol = _FINISHED  # type: ignore[assignment]
        self.__dict__.pop("_task_group", None)
        # asyncio's socket transport keeps its own bound read callback (CPython 3.11-3.13),
        # a cycle holding the stream reader and protocol; a closed transport never reads again.
        transport = self.writer.transport
        if transport.is_closing() and hasattr(transport, "__dict__"):  # (uvloop's C transport has no such cycle)
            vars(transport).pop("_read_ready_cb", None)

    async def _refuse(self) -> None:
        # Read (and drop) what the client sends first: closing with unread bytes would make
        # its TCP stack report a reset instead of the 503.
        try:
            async with asyncio.timeout(REFUSAL_DRAIN_SECONDS):
                received = b""
                while b"\r\n\r\n" not in received and len(received) < REFUSAL_DRAIN_BYTES:
                    chunk = await self.reader.read(REFUSAL_DRAIN_BYTES)
                    if not chunk:
                        break
                    received += chunk
            self.writer.write(REFUSAL)
            await self.writer.drain()
        except (TimeoutError, OSError, RuntimeError):
            pass
        finally:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, RuntimeError):
                pass

    async def _read_data(self) -> None:
        if self.guard is None:
            await super()._read_data()
            return
        # Hypercorn's loop, plus a note of when a request head starts arriving.
        while not self.reader.at_eof():
            try:
                data = await asyncio.wait_for(self.reader.read(2**16), self.config.read_timeout)
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            if data and self._idle_timer is not None:
                self._head_begun()
            await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())
        # The client is gone: stop the idle deadline now instead of holding the socket open
        # (in CLOSE-WAIT) until it fires. A request still in flight was told by Closed().
        self._disarm_idle()

    async def protocol_send(self, event: Any) -> None:
        if self.guard is None:
            await super().protocol_send(event)
            return
        if isinstance(event, RawData):
            await self._send_coalesced(event.data)
            return
        if isinstance(event, Updated):
            # Hypercorn restarts an idle *task* here at every request's end (and cancels and
            # awaits it at every start): three tasks per request with the deadlines below.
            # A timer does the same for a fraction of the cost.
            if event.idle:
                self._arm_idle()
            else:
                self._fresh = False
                self._disarm_idle()
            return
        await super().protocol_send(event)

    async def _send_coalesced(self, data: bytes) -> None:
        """Queue ``data`` for one write at the end of this loop iteration.

        Hypercorn writes every piece (a response head, each body chunk, the final empty
        chunk) with its own ``send`` syscall: a streamed answer of 1,000 events cost 1,000
        sends, a third of the gateway's CPU. Pieces produced in the same iteration now
        leave in one send; each stays its own HTTP chunk, so nothing changes on the wire
        but the packet boundaries. Back-pressure is Hypercorn's: past the transport's
        high-water mark the sender waits in ``drain``.
        """
        if not self._unsent:
            self.loop.call_soon(self._flush)
        self._unsent.append(data)
        self._unsent_bytes += len(data)
        try:
            if self._unsent_bytes >= COALESCE_FLUSH_BYTES:
                self._flush()
            await self.writer.drain()  # raises once the client is gone; waits while its buffer is full
        except (ConnectionError, RuntimeError):
            await self.protocol.handle(Closed())

    def _flush(self) -> None:
        if not self._unsent:
            return
        data = b"".join(self._unsent) if len(self._unsent) > 1 else self._unsent[0]
        self._unsent.clear()
        self._unsent_bytes = 0
        if not self.writer.is_closing():
            self.writer.write(data)

    async def _close(self) -> None:
        self._flush()  # what the app sent goes out before the end of the stream
        if self.guard is not None:
            self._disarm_idle()
        await super()._close()

    async def _initiate_server_close(self) -> None:
        self._flush()
        await super()._initiate_server_close()

    async def _idle_timeout(self) -> None:
        # Hypercorn starts this once per connection (later idle periods come as Updated).
        if self.guard is None:
            await super()._idle_timeout()
            return
        self._arm_idle()

    # ------------------------------------------------------------------ idle deadlines

    def _arm_idle(self) -> None:
        """Start an idle period: a new connection has the header timeout to deliver its first
        request head; between requests, the keep-alive timeout for the next head to begin
        (then the header timeout for it to complete, see _head_begun)."""
        guard = self.guard
        assert guard is not None
        self._disarm_idle()
        watch = _IdleWatch.of(self.context)
        if watch.stopping:
            self._close_idle()  # the server is shutting down: an idle connection closes now
            return
        self._head_started = self._waiting_for_head = False
        timeout = guard.header_timeout if self._fresh else guard.keep_alive_timeout
        self._idle_timer = self.loop.call_later(timeout, self._idle_expired)
        watch.idle.add(self)

    def _head_begun(self) -> None:
        self._head_started = True
        guard = self.guard
        if guard is not None and not self._fresh and not self._waiting_for_head and self._idle_timer is not None:
            self._waiting_for_head = True
            self._idle_timer.cancel()
            self._idle_timer = self.loop.call_later(guard.header_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        watch = _IdleWatch.existing(self.context)
        if watch is not None:
            watch.idle.discard(self)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        guard = self.guard
        if guard is not None and self._head_started:
            guard.head_timeouts += 1
            guard.throttled.warning(
                "head", "closed a connection whose request head did not arrive within "
                "[kernel] header_timeout_seconds = %s", guard.header_timeout)
        self._close_idle()

    def _close_idle(self) -> None:
        watch = _IdleWatch.existing(self.context)
        if watch is not None:
            watch.idle.discard(self)
        # Kept by the watch until done: the loop holds tasks only weakly.
        _IdleWatch.of(self.context).closing(self.loop.create_task(self._initiate_server_close()))


class _IdleWatch:
    """Per worker: the idle connections, closed at once when the server starts shutting down.

    One task per server waits for the shutdown signal, instead of one per connection and
    request as Hypercorn's idle tasks did.
    """

    _by_context: weakref.WeakKeyDictionary[Any, _IdleWatch] = weakref.WeakKeyDictionary()

    def __init__(self, context: Any) -> None:
        self.idle: set[GatewayTCPServer] = set()
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing(asyncio.get_running_loop().create_task(self._watch(context)))

    @classmethod
    def of(cls, context: Any) -> _IdleWatch:
        watch = cls._by_context.get(context)
        if watch is None:
            watch = cls._by_context[context] = cls(context)
        return watch

    @classmethod
    def existing(cls, context: Any) -> _IdleWatch | None:
        return cls._by_context.get(context)

    def closing(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, context: Any) -> None:
        await context.terminated.wait()
        self.stopping = True
        for server in list(self.idle):
            server._disarm_idle()
            server._close_idle()


def connection_cap(configured: int, open_files: int | None) -> int:
    """``configured``, held low enough that accept() and upstream sockets never run out of
    descriptors: half of what the open-files limit leaves after a reserve (each client
    connection may hold an upstream connection too)."""
    if open_files is None:
        return configured
    return min(configured, max(16, (open_files - FD_RESERVE) // 2))


def guard_of(config: HypercornConfig) -> ConnectionGuard | None:
    return getattr(config, GUARD_ATTRIBUTE, None)


def install(config: HypercornConfig, guard: ConnectionGuard) -> None:
    """Serve ``config``'s connections through :class:`GatewayTCPServer`, held to ``guard``,
    and their HTTP/1.1 bodies through :class:`~kernel.chunk_framing.GatewayH11Protocol`."""
    setattr(config, GUARD_ATTRIBUTE, guard)
    hypercorn_run.TCPServer = GatewayTCPServer  # type: ignore[misc]
    # ProtocolWrapper picks its HTTP/1.1 protocol by this module-level name.
    hypercorn_protocol.H11Protocol = GatewayH11Protocol  # type: ignore[misc]
