"""Server-sent events plumbing shared by endpoint plugins: keep-alives and disconnects.

The wire encoding of each event belongs to the endpoint plugin; this module only
moves already-encoded chunks, adds ``: ping`` comments during silences and tells
the caller when the client went away, whenever that happens: while the stream is
being read, or before its body ever started (see :class:`ResponseWatch`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from quart import Response, has_request_context, request

log = logging.getLogger("kernel.streaming")

KEEPALIVE_SECONDS = 15.0
PING = b": ping\n\n"
_END = object()
# The ASGI scope key under which ResponseWatch leaves the request's watch.
WATCH_SCOPE_KEY = "kernel.response_watch"


class ResponseWatch:
    """ASGI middleware: run a request's "client left" callbacks if its response never completes.

    A streaming body's own ``finally`` only runs once the server has started reading it.
    A client that hangs up earlier (while the view's ``after_request`` hooks run, or while
    the status line is being sent) makes Quart cancel the request task before that, so
    the body generator never starts, never ends, and a foreground run would go on for
    nobody. This wrapper sees every request end, however it ends: when the final body
    message was not sent, the response was abandoned and the callbacks registered with
    :func:`when_client_leaves` run.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        callbacks: list[Callable[[], None]] = []
        completed = False

        async def watched_send(message: Any) -> None:
            nonlocal completed
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True

        try:
            await self.app({**scope, WATCH_SCOPE_KEY: callbacks}, receive, watched_send)
        finally:
            if not completed:
                run_client_left(callbacks)


def run_client_left(callbacks: list[Callable[[], None]]) -> None:
    """Run an abandoned response's "client left" callbacks (each one whatever the others do)."""
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one failing callback must not skip the others
            log.exception("a client-left callback failed")


def when_client_leaves(callback: Callable[[], None]) -> None:
    """Call ``callback`` if the current request's response is not delivered in full.

    For views that start work which should stop with the client (a foreground run):
    covers every moment after this call, including before a streaming body starts.
    Outside a request served through :class:`ResponseWatch` this does nothing.
    """
    if has_request_context():
        callbacks = request.scope.get(WATCH_SCOPE_KEY)
        if callbacks is not None:
            callbacks.append(callback)


class _Once:
    """``on_disconnect`` called at most once, and never after the stream was delivered."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def disarm(self) -> None:
        self._callback = None

    def __call__(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            # The client hung up, or the server is stopping and cut the stream at the end of
            # its grace period: either way nobody will read the rest.
            log.info("client disconnected (or the server stopped) before the stream ended")
            callback()


class _SilenceWatch:
    """One timer per stream that puts a ping in ``queue`` after ``interval`` s without a chunk.

    The timer is re-armed only when it fires (a chunk just records the time), so a chatty
    stream costs no timer per chunk. A class rather than a closure that re-schedules
    itself by name: such a closure is a reference cycle, and a thousand streams' worth of
    them waited for the garbage collector.
    """

    def __init__(self, queue: asyncio.Queue[Any], interval: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._interval = interval
        self.last_chunk = self._loop.time()
        self._timer = self._loop.call_at(self.last_chunk + interval, self._fire)

    def _fire(self) -> None:
        now = self._loop.time()
        if now - self.last_chunk >= self._interval:
            if self._queue.empty():  # the consumer is waiting: a ping wakes it
                self._queue.put_nowait(PING)
            self.last_chunk = now  # (a full queue means a busy consumer, not silence)
        self._timer = self._loop.call_at(self.last_chunk + self._interval, self._fire)

    def chunk_sent(self) -> None:
        self.last_chunk = self._loop.time()

    def stop(self) -> None:
        self._timer.cancel()


async def with_keepalive(source: AsyncIterator[bytes], interval: float = KEEPALIVE_SECONDS) -> AsyncIterator[bytes]:
    """Yield ``source``'s chunks, inserting a ping comment after ``interval`` s of silence.

    The source is read by its own task into a queue, so a ping never interrupts (cancels)
    a read of the source. Silence is watched by one timer per stream (:class:`_SilenceWatch`)
    rather than by a timeout around every read: with a thousand slow streams, a timer per
    token was a large share of the gateway's CPU.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # re-raised in the consumer
            await queue.put(exc)
        finally:
            try:
                queue.put_nowait(_END)
            except asyncio.QueueFull:
                await queue.put(_END)

    task = asyncio.get_running_loop().create_task(pump())
    watch = _SilenceWatch(queue, interval)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            watch.chunk_sent()
            yield item
    finally:
        watch.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def sse_response(
    chunks: AsyncIterator[bytes],
    *,
    on_disconnect: Callable[[], None] | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """A ``text/event-stream`` response; ``on_disconnect`` runs (once) if the client leaves early.

    "Early" is any time before the last chunk was handed over, including before the
    body started (the view's request must be served through :class:`ResponseWatch`,
    as every app built by :func:`kernel.app.create_app` is).
    """
    once = _Once(on_disconnect) if on_disconnect is not None else None
    if once is not None:
        when_client_leaves(once)

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for chunk in with_keepalive(chunks, keepalive):
                yield chunk
            finished = True
        finally:
            if once is not None:
                if finished:
                    once.disarm()
                else:
                    once()

    response = Response(body(), status=status, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    response.timeout = None  # streams may outlive Quart's default response timeout
    return response
