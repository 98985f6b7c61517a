"""The provider's own HTTP/1.1 client (plugins/openai_upstream/http1.py) against a raw
loopback server that writes exactly the bytes each test scripts: framings, hostile
answers, pooling and flow control that the fake upstream cannot produce."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from testsupport.fake_openai import sse_bytes, text_chunks

from kernel.app import get_kernel
from plugins.openai_upstream import http1
from plugins.openai_upstream.http1 import (
    DeadlineExceeded,
    Http1Client,
    ReadTimeout,
    UpstreamTransportError,
    header_block,
)

from .conftest import upstream_config

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def sse_body(*pieces: str) -> bytes:
    return b"".join(sse_bytes(c) for c in text_chunks(*pieces)) + b"data: [DONE]\n\n"


def chunked(body: bytes, size: int = 200) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def sse_answer(*pieces: str) -> bytes:
    """A streamed answer, chunked, on a keep-alive connection."""
    return SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(sse_body(*pieces))


# One request's script: bytes are written, a float sleeps, "close" closes the connection,
# "hang" keeps it open and silent.
Step = bytes | float | str


@dataclass
class RawUpstream:
    """A loopback HTTP server answering each request with the next scripted steps."""

    scripts: list[list[Step]]
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (connection number, request head)
    connections: int = 0
    closed: list[int] = field(default_factory=list)  # connections the client closed
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests.append((number, head))
                for step in self.scripts.pop(0):
                    if isinstance(step, bytes):
                        writer.write(step)
                        await writer.drain()
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    elif step == "close":
                        writer.close()
                        return
                    elif step == "hang":
                        await reader.read()  # until the client goes
                        self.closed.append(number)
                        return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.append(number)
        finally:
            writer.close()


@pytest.fixture
def raw_app(make_app) -> Callable[..., Any]:
    def factory(server: RawUpstream, **options: Any) -> Any:
        return make_app(upstream_config(server.base_url, **options))

    return factory


# --------------------------------------------------------------------------- framings


async def test_a_close_delimited_stream_is_read_to_its_end(raw_app, user_turn, run_turn):
    """No Content-Length and no chunking: the body ends with the connection."""
    answer = SSE_HEAD + b"Connection: close\r\n\r\n" + sse_body("to ", "the end")
    async with RawUpstream([[answer, "close"]]) as server:
        app = raw_app(server)
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "to the end")


async def test_a_body_cut_short_of_its_content_length_fails_naming_it(raw_app, user_turn, run_turn):
    body = sse_body("never ", "finished")
    answer = SSE_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body[:body.index(b"finished")]
    async with RawUpstream([[answer, "close"]]) as server:
        app = raw_app(server, max_retries=0)
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert result.status == "failed"
    assert "RemoteProtocolError: the response body ended early" in result.error.message
    assert result.text == "never "  # what arrived before the cut stays in the run


async def test_an_interim_100_continue_is_skipped(raw_app, user_turn, run_turn):
    async with RawUpstream([[b"HTTP/1.1 100 Continue\r\n\r\n", sse_answer("after ", "interim")]]) as server:
        app = raw_app(server)
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "after interim")


# --------------------------------------------------------------------------- hostile answers


async def test_a_malformed_status_line_is_a_protocol_error_and_retried(raw_app, user_turn, run_turn):
    async with RawUpstream([[b"HTTP/1.1 two hundred\r\n\r\n"], [sse_answer("second ", "try")]]) as server:
        app = raw_app(server)
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "second try")
    assert [number for number, _ in server.requests] == [1, 2]  # the broken connection was not reused


async def test_an_endless_response_head_is_refused(raw_app, user_turn, run_turn):
    """Header lines that never end are cut at MAX_HEAD_BYTES, not buffered forever."""
    padding = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    async with RawUpstream([[b"HTTP/1.1 200 OK\r\n", *[padding] * 100, "hang"]]) as server:
        app = raw_app(server, max_retries=0, read_timeout=30)
        async with app.test_app():
            _, result = await asyncio.wait_for(run_turn(app, user_turn()), 10)
    assert (result.error.status, result.error.code) == (502, "upstream_connection_error")
    assert f"RemoteProtocolError: the response head is over {http1.MAX_HEAD_BYTES} bytes" in result.error.message


async def test_bytes_after_an_answer_keep_its_connection_out_of_the_pool(raw_app, user_turn, run_turn):
    async with RawUpstream([[sse_answer("one"), b"HTTP/1.1 200 OK\r\n\r\nsurprise"],
                            [sse_answer("two")]]) as server:
        app = raw_app(server)
        async with app.test_app():
            _, first = await run_turn(app, user_turn())
            await asyncio.sleep(0.2)  # the stray bytes arrive while the connection is idle
            _, second = await run_turn(app, user_turn())
    assert (first.text, second.text) == ("one", "two")
    assert [number for number, _ in server.requests] == [1, 2]


async def test_a_proxy_refusing_the_tunnel_is_a_connect_error(make_app, user_turn, run_turn, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with RawUpstream([[b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"]]) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        app = make_app(upstream_config("https://upstream.invalid/v1", max_retries=0))
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.error.status, result.error.code) == (502, "upstream_connection_error")
    assert "ConnectError: the proxy refused the tunnel (HTTP/1.1 407 Proxy Authentication Required)" \
        in result.error.message
    [(_, head)] = proxy.requests
    assert head.startswith(b"CONNECT upstream.invalid:443 HTTP/1.1\r\n")


async def test_a_host_name_is_resolved_and_its_addresses_tried(make_app, user_turn, run_turn):
    """A host name is resolved and dialled (where ``localhost`` also resolves to ::1, where
    nothing listens, the next address serves), and the Host header names it, not an address."""
    async with RawUpstream([[sse_answer("by ", "name")]]) as server:
        app = make_app(upstream_config(f"http://localhost:{server.port}/v1", max_retries=0))
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "by name")
    [(_, head)] = server.requests
    assert f"Host: localhost:{server.port}\r\n".encode() in head


# --------------------------------------------------------------------------- the pool


async def test_a_connection_the_server_closed_while_idle_is_not_reused(raw_app, user_turn, run_turn, caplog):
    async with RawUpstream([[sse_answer("one"), "close"], [sse_answer("two")]]) as server:
        app = raw_app(server)
        async with app.test_app():
            _, first = await run_turn(app, user_turn())
            await asyncio.sleep(0.3)  # the server's FIN arrives while the connection is idle
            with caplog.at_level(logging.WARNING, logger="plugins.openai_upstream"):
                _, second = await run_turn(app, user_turn())
    assert (first.text, second.text) == ("one", "two")
    assert [number for number, _ in server.requests] == [1, 2]
    assert not [r for r in caplog.records if "retry" in r.getMessage()]  # a new connection, not a retry


async def test_an_idle_connection_is_closed_after_its_idle_time(raw_app, user_turn, run_turn, monkeypatch):
    monkeypatch.setattr(http1, "IDLE_SECONDS", 1.0)
    async with RawUpstream([[sse_answer("one")], [sse_answer("two")], [sse_answer("three")]]) as server:
        app = raw_app(server)
        async with app.test_app():
            await run_turn(app, user_turn())
            await run_turn(app, user_turn())  # at once: the same connection
            await asyncio.sleep(1.3)
            _, last = await run_turn(app, user_turn())
            client = get_kernel(app).providers["up"]._client
            assert (client.in_use, client.idle) == (0, 1)
        await asyncio.sleep(0.05)
    assert last.text == "three"
    assert [number for number, _ in server.requests] == [1, 1, 2]
    assert 1 in server.closed  # the stale one was closed, not left open


# --------------------------------------------------------------------------- the client on its own


async def test_idle_connections_are_closed_without_further_traffic(monkeypatch):
    monkeypatch.setattr(http1, "IDLE_SECONDS", 0.3)
    async with RawUpstream([[sse_answer("one")]]) as server:
        client = client_for(server)
        response = await client.post(b"{}", b"")
        while await response.read() is not None:
            pass
        response.release()
        assert client.idle == 1
        await asyncio.sleep(0.8)
        assert (client.idle, server.closed) == (0, [1])  # closed by the client's own timer
        await client.aclose()


def client_for(server: RawUpstream, read_timeout: float | None = 5.0) -> Http1Client:
    return Http1Client(server.base_url + "/chat/completions", ssl_context=ssl.create_default_context(),
                       connect_timeout=5.0, read_timeout=read_timeout)


async def test_reading_pauses_for_a_slow_reader_and_that_is_no_read_timeout():
    """A reader slower than the server stops the socket being read (memory stays bounded);
    the server's resulting silence is not counted against read_timeout."""
    body = bytes(range(256)) * 8 * 1024  # 2 MiB
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with RawUpstream([[answer]]) as server:
        client = client_for(server, read_timeout=0.2)
        response = await client.post(b"{}", header_block({"Content-Type": "application/json"}))
        received = [await response.read()]
        await asyncio.sleep(0.5)  # longer than read_timeout, while the server is blocked on us
        largest = 0
        while (piece := await response.read()) is not None:
            largest = max(largest, len(piece))
            received.append(piece)
        assert response.complete
        response.release()
        await client.aclose()
    assert b"".join(received) == body
    # Never much more than the read buffer waits unread (plus one socket read).
    assert largest <= http1.READ_BUFFER + 256 * 1024


async def test_a_silent_server_mid_body_is_a_read_timeout():
    async with RawUpstream([[SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "hang"]]) as server:
        client = client_for(server, read_timeout=0.2)
        response = await client.post(b"{}", b"")
        assert await response.read() == b"hello"
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(response.read(), 5)
        response.close()
        assert client.in_use == 0
        await client.aclose()


async def test_the_deadline_bounds_an_answer_that_trickles_forever():
    """Bytes every 50 ms keep read_timeout from firing; the request's deadline still ends it."""
    trickle: list[Step] = [SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"]
    for _ in range(200):
        trickle += [b"1\r\nx\r\n", 0.05]
    async with RawUpstream([trickle]) as server:
        client = client_for(server, read_timeout=1.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.post(b"{}", b"", deadline=started + 0.4)
        received = b""
        with pytest.raises(DeadlineExceeded):
            while (piece := await response.read()) is not None:
                received += piece
        assert 0.4 <= loop.time() - started < 1.0
        assert received.startswith(b"x")
        response.close()
        await client.aclose()


async def test_a_request_on_a_closed_client_fails_cleanly():
    async with RawUpstream([]) as server:
        client = client_for(server)
        await client.aclose()
        with pytest.raises(UpstreamTransportError):
            await client.post(b"{}", b"")


def test_header_lines_refuse_line_breaks():
    assert header_block({"X-A": "1", "X-B": "é"}) == b"X-A: 1\r\nX-B: \xc3\xa9\r\n"
    with pytest.raises(ValueError, match="line break"):
        header_block({"X-A": "1\r\nX-Injected: yes"})


def test_a_forwarded_header_replaces_a_configured_one_of_the_same_name():
    from plugins.openai_upstream.client import ClientSetup

    configured = {"Authorization": "Bearer k", "TraceParent": "00-static"}
    setup = ClientSetup(url="http://127.0.0.1:1/v1/chat/completions", header_map=configured,
                        connect_timeout=1.0, read_timeout=1.0,
                        ssl_context=ssl.create_default_context())
    assert setup.headers_with({"traceparent": "00-live"}) == b"Authorization: Bearer k\r\ntraceparent: 00-live\r\n"
    assert setup.headers_with({"x-other": "1"}) == header_block(configured) + b"x-other: 1\r\n"
