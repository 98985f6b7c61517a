"""A lean HTTP/1.1 client for one upstream URL: keep-alive pool, streamed bodies, timeouts.

The provider sends one kind of request (a JSON ``POST`` to one URL) and reads one
kind of answer (a streamed body), so a general client's per-request work (URL
joining, cookie and redirect handling, header merging, trace hooks, a timer
rescheduled on every read, several calls per body chunk) is overhead here. Measured
on the bench's 8-token streamed answer, aiohttp's client cost about 280 us of CPU
per request and this one about 150; on a 1,000-token stream aiohttp's per-chunk calls
were a third of the gateway's CPU (see benchmarks/README.md).

The parsing is httptools (llhttp, the C parser uvicorn uses); this module adds:

* a pool of idle keep-alive connections (LIFO; closed after ``IDLE_SECONDS``; a
  connection whose answer was not read to its end is closed, never reused);
* ``connect_timeout`` over TCP connect, a proxy's ``CONNECT`` and the TLS handshake;
* ``read_timeout`` as the longest silence from the server while an answer is due, and
  the request's own deadline, on one timer per request (re-armed only when it fires,
  not on every read: a timer per read, or an ``asyncio.timeout`` per await, was a
  measurable part of a streamed token's cost);
* flow control: reading pauses while more than ``READ_BUFFER`` bytes wait unread;
* Happy Eyeballs for hosts with several addresses (an unreachable IPv6 route does not
  cost the whole connect timeout);
* proxies: an ``http://`` upstream through a forwarding proxy (absolute-form target),
  an ``https://`` one through a ``CONNECT`` tunnel, TLS verified end to end;
* limits on a hostile answer: a response head over ``MAX_HEAD_BYTES`` is an error.

Errors are this module's own classes, so the provider's messages do not depend on a
client library (:func:`plugins.openai_upstream.client.describe_error` words them).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

READ_BUFFER = 64 * 1024  # unread body bytes above which reading pauses (aiohttp's default)
MAX_HEAD_BYTES = 64 * 1024  # a response head (status line and headers) larger than this is refused
IDLE_SECONDS = 15.0  # an idle pooled connection older than this is closed (aiohttp's keepalive_timeout)
CONNECT_HEAD_LIMIT = 16 * 1024  # a proxy's answer to CONNECT
# A host with several addresses (IPv6 and IPv4): the next is tried after this many seconds
# without waiting for the first to fail (RFC 8305; aiohttp's default too).
HAPPY_EYEBALLS = 0.25


class UpstreamTransportError(Exception):
    """The connection failed or the server broke HTTP; ``kind`` names it in messages."""

    kind = "RemoteProtocolError"


class ConnectFailed(UpstreamTransportError):
    """No connection: refused, unreachable, DNS, TLS verification, a proxy refusing CONNECT."""

    kind = "ConnectError"

    def __init__(self, detail: str, os_error: OSError | None = None) -> None:
        super().__init__(detail)
        self.os_error = os_error


class ConnectTimeout(Exception):
    """``connect_timeout`` passed before the connection (and TLS, and any tunnel) was up."""


class ReadTimeout(Exception):
    """The server was silent for ``read_timeout`` while an answer was due."""


class DeadlineExceeded(TimeoutError):
    """The request's own deadline (the provider's ``total_timeout``) passed while an answer was due."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: the upstream URL, and the hop actually dialled (a proxy, or the host)."""

    target: bytes  # the request-target: origin-form, or absolute-form through a forwarding proxy
    host_header: bytes
    host: str
    port: int
    dial_host: str
    dial_port: int
    dial_tls: bool  # TLS to the dialled hop (the upstream itself, or an https:// proxy)
    tunnel: bool  # CONNECT through the proxy first


def origin_for(url: str, proxy: str | None) -> Origin:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    shown = f"[{host}]" if ":" in host else host
    authority = shown if parts.port is None else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if proxy is None:
        return Origin(path.encode(), authority.encode("idna"), host, port, host, port, tls, False)
    via = urlsplit(proxy)
    via_tls = via.scheme == "https"
    via_port = via.port or (443 if via_tls else 80)
    target = path if tls else f"{parts.scheme}://{authority}{path}"
    return Origin(target.encode(), authority.encode("idna"), host, port, via.hostname or "", via_port,
                  via_tls, tls)


def header_block(headers: Mapping[str, str]) -> bytes:
    """``Name: value`` lines (CRLF-terminated); refuses CR, LF or NUL (header injection)."""
    return b"".join(header_text(name, value) + b"\r\n" for name, value in headers.items())


def header_text(name: str, value: str) -> bytes:
    """One header's ``Name: value`` (no line end), UTF-8; refuses CR, LF or NUL."""
    text = f"{name}: {value}"
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"header {name!r} contains a line break or NUL")
    return text.encode("utf-8")


class Http1Response:
    """A response whose head has arrived; read its body with :meth:`read`, then
    :meth:`release` (read to its end) or :meth:`close`."""

    __slots__ = ("_client", "_conn", "headers", "status")

    def __init__(self, conn: _Connection, client: Http1Client) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._client = client

    async def read(self) -> bytes | None:
        """Every body byte that has arrived (waiting for some), or ``None`` at the end."""
        return await self._conn.read()

    @property
    def complete(self) -> bool:
        """The whole body has arrived and been read."""
        return self._conn.at_end

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if it can be reused."""
        self._client._release(self._conn)

    def close(self) -> None:
        """Done with the response before its end: its connection is closed."""
        self._client._discard(self._conn)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection and the answer in flight on it (httptools callbacks)."""

    def __init__(self, read_timeout: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.read_timeout = read_timeout
        self.lost = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.message_done = False
        self.in_flight = False
        self.error: BaseException | None = None
        self._head_bytes = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._close_delimited = False
        self._keep_alive = False
        self._waiter: asyncio.Future[None] | None = None
        self._last_data = 0.0
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the request's side

    def begin(self, request: bytes, deadline: float | None = None) -> None:
        """Send one request; the answer is read through :meth:`wait_head` and :meth:`read`
        (either raises :class:`DeadlineExceeded` once ``deadline``, loop time, has passed)."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise UpstreamTransportError("the server closed the connection")
        self._reset()
        self.in_flight = True
        self._last_data = self.loop.time()
        self._deadline = deadline
        self._arm()
        self.transport.write(request)

    async def wait_head(self) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes | None:
        while not self._chunks:
            if self.message_done:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_data = self.loop.time()  # the silence while paused was ours
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def finish(self) -> None:
        """The request is over (its answer read or abandoned)."""
        self.in_flight = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def at_end(self) -> bool:
        return self.message_done and not self._chunks

    @property
    def reusable(self) -> bool:
        return (self.at_end and self.error is None and not self.lost and self.transport is not None
                and not self.transport.is_closing() and self._keep_alive)

    def close(self) -> None:
        self.finish()
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.message_done:
            self.error = error
        self._wake()

    def _arm(self, now: float | None = None) -> None:
        """Time the next check: the silence limit, or the deadline when that comes first."""
        if self.read_timeout is None:
            due = self._deadline
        else:
            # While reading is paused the server is not silent (we stopped reading).
            base = (now if now is not None else self.loop.time()) if self._paused else self._last_data
            due = base + self.read_timeout
            if self._deadline is not None and self._deadline < due:
                due = self._deadline
        if due is not None:
            self._timer = self.loop.call_at(due, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        if not self.in_flight or self.message_done:
            return
        now = self.loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._fail(DeadlineExceeded("the request's deadline passed"))
        elif self.read_timeout is not None and not self._paused and now >= self._last_data + self.read_timeout:
            self._fail(ReadTimeout(f"no data for {self.read_timeout:g}s"))
        else:
            self._arm(now)
            return
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            # Bytes nobody asked for (after an answer, or on an idle connection): this
            # connection's framing can no longer be trusted.
            self.lost = True
            if self.transport is not None:
                self.transport.close()
            return
        if self.message_done:
            self.lost = True  # bytes after the answer: the connection is not reused
            return
        self._last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._protocol_error("the server switched protocols")
            return
        except httptools.HttpParserError as exc:
            self._protocol_error(f"malformed HTTP response ({exc})")
            return
        if not self.head_done:
            # Counted per read (one read is at most the socket buffer), so headers
            # that never end are cut off soon after the limit.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._protocol_error(f"the response head is over {MAX_HEAD_BYTES} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.in_flight or self.message_done:
            self._wake()
            return
        if self.head_done and self._close_delimited and exc is None:
            self.message_done = True  # a body with no length ends with the connection
            self._wake()
            return
        if isinstance(exc, OSError):
            self._fail(exc)
        elif self.head_done:
            self._fail(UpstreamTransportError("the response body ended early"))
        else:
            self._fail(UpstreamTransportError("the server closed the connection"))

    def _protocol_error(self, detail: str) -> None:
        self._fail(UpstreamTransportError(detail))
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.message_done:
            # A second answer to one request: the framing can no longer be trusted. (Raising
            # stops the parser; data_received then closes the connection.)
            raise UpstreamTransportError("the server sent more than one answer")
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.status = status
        headers = self.headers
        self._close_delimited = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", "").lower() and status not in (204, 304)
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_BUFFER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self.message_done = True
        self._keep_alive = self.parser.should_keep_alive()  # (llhttp forgets it once the message ends)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()


class Http1Client:
    """Requests to one URL over pooled HTTP/1.1 connections (see the module docstring)."""

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext, connect_timeout: float | None,
                 read_timeout: float | None, proxy: str | None = None,
                 proxy_headers: Mapping[str, str] | None = None, host_header: str | None = None) -> None:
        self.origin = origin_for(url, proxy)
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._connect_head = b""
        if self.origin.tunnel:
            authority = f"{self.origin.host}:{self.origin.port}".encode("idna")
            self._connect_head = (b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n"
                                  + header_block(proxy_headers or {}) + b"\r\n")
        host = b"Host: " + self.origin.host_header if host_header is None else header_text("Host", host_header)
        self._request_line = b"POST " + self.origin.target + b" HTTP/1.1\r\n" + host + b"\r\n"
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None  # closes idle connections past IDLE_SECONDS

    @property
    def in_use(self) -> int:
        """Connections with a request in flight (acquired until released or closed)."""
        return len(self._busy)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def post(self, body: bytes, headers: bytes, deadline: float | None = None) -> Http1Response:
        """Send ``body`` with ``headers`` (a :func:`header_block`) and wait for the answer's head.

        ``deadline`` (loop time) bounds the whole exchange, the body's reads included:
        past it, waiting raises :class:`DeadlineExceeded` (a ``TimeoutError``).
        """
        if self._closed:
            raise UpstreamTransportError("the client is closed")
        conn = self._take_idle()
        if conn is None:
            if deadline is None:
                conn = await self._connect()
            else:
                async with asyncio.timeout_at(deadline):  # only when connecting: rare with the pool
                    conn = await self._connect()
        self._busy.add(conn)
        try:
            conn.begin(b"".join((self._request_line, headers, b"Content-Length: %d\r\n\r\n" % len(body), body)),
                       deadline)
            await conn.wait_head()
        except BaseException:
            self._discard(conn)
            raise
        return Http1Response(conn, self)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()
        self._busy.clear()

    # ------------------------------------------------------------------ the pool

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.lost or now - conn.idle_since > IDLE_SECONDS:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _Connection) -> None:
        if conn not in self._busy:
            return
        self._busy.discard(conn)
        conn.finish()
        if conn.reusable and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._prune(conn.idle_since)
            if self._sweeper is None:  # one timer per client, whatever the traffic
                self._sweeper = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._sweep)
        else:
            conn.close()

    def _sweep(self) -> None:
        """Close what idled too long even when no request comes to notice it."""
        self._sweeper = None
        now = time.monotonic()
        self._prune(now)
        if self._idle and not self._closed:
            due = max(self._idle[0].idle_since + IDLE_SECONDS - now, 0.01)
            self._sweeper = asyncio.get_running_loop().call_later(due, self._sweep)

    def _discard(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        conn.close()

    def _prune(self, now: float) -> None:
        # Oldest first: the pool is LIFO, so stale connections gather at the start.
        stale = 0
        for conn in self._idle:
            if not conn.lost and now - conn.idle_since <= IDLE_SECONDS:
                break
            conn.close()
            stale += 1
        if stale:
            del self._idle[:stale]

    # ------------------------------------------------------------------ connecting

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._open()
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self._connect_timeout:g}s") from None

    async def _open(self) -> _Connection:
        origin = self.origin
        loop = asyncio.get_running_loop()
        conn = _Connection(self._read_timeout)
        hop_tls = self._ssl if origin.dial_tls else None
        try:
            if not origin.tunnel:
                await loop.create_connection(
                    lambda: conn, origin.dial_host, origin.dial_port, ssl=hop_tls,
                    server_hostname=origin.dial_host if hop_tls else None, happy_eyeballs_delay=HAPPY_EYEBALLS)
                return conn
            tunnel = _TunnelOpener(self._connect_head)
            transport, _ = await loop.create_connection(
                lambda: tunnel, origin.dial_host, origin.dial_port, ssl=hop_tls,
                server_hostname=origin.dial_host if hop_tls else None, happy_eyeballs_delay=HAPPY_EYEBALLS)
            try:
                await tunnel.established()
                tls = await loop.start_tls(transport, conn, self._ssl, server_hostname=origin.host)
            except BaseException:
                transport.close()
                raise
            if tls is None:
                raise ConnectFailed("the proxy tunnel closed during the TLS handshake")
            conn.connection_made(tls)
            return conn
        except UpstreamTransportError:
            raise
        except OSError as exc:  # refused, unreachable, DNS, TLS verification (ssl errors are OSErrors)
            raise ConnectFailed(str(exc), exc) from None


class _TunnelOpener(asyncio.Protocol):
    """Sends ``CONNECT`` to a proxy and waits for its 2xx; the TLS session then takes the transport."""

    def __init__(self, head: bytes) -> None:
        self._head = head
        self._answer = b""
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._head)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._answer += data
        end = self._answer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._answer) > CONNECT_HEAD_LIMIT:
                self._done.set_exception(ConnectFailed("the proxy's answer to CONNECT is too long"))
            return
        status_line = self._answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or not 200 <= int(parts[1]) < 300:
            shown = " ".join(status_line.split())[:120]
            self._done.set_exception(ConnectFailed(f"the proxy refused the tunnel ({shown})"))
        elif end + 4 < len(self._answer):
            self._done.set_exception(ConnectFailed("the proxy sent data before the TLS handshake"))
        else:
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(ConnectFailed("the proxy closed the connection during CONNECT", None))

    async def established(self) -> None:
        await self._done
