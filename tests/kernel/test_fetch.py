"""The guarded URL fetcher: address classification, refusals, redirects, limits.

Every server here is a raw asyncio HTTP server on a free loopback port; nothing
contacts a non-loopback address (forbidden targets are refused before connecting,
and name resolution for made-up hosts is replaced by a table).
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import pytest
import trustme

from kernel import fetch
from kernel.fetch import FetchError, FetchPolicy, fetch_url, is_forbidden_address, redact_url

LOOPBACK = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=5.0)

Handler = Callable[[str, dict[str, str], asyncio.StreamWriter], Awaitable[None]]


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    head = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Server:
    """A tiny HTTP server; ``requests`` records (target, headers) of every request."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            self.requests.append((target, headers))
            await self.handler(target, headers, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def fixed(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    async def handler(target: str, headers_in: dict[str, str], writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, body, headers))

    return handler


# --------------------------------------------------------------------------- classifier

FORBIDDEN = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "0.0.0.0",
    "0.1.2.3", "169.254.169.254", "100.64.0.1", "100.127.255.254", "224.0.0.1", "239.255.255.250",
    "255.255.255.255", "240.0.0.1", "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
    "::", "::1", "fe80::1", "fe80::1%2", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::ffff:0.0.0.0",
    "::127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:a00:1::",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::1", "2001:db8::1", "2001::1",
    "100::1", "3fff::1", "5f00::1", "4000::1",
]
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.169.0.1",
    "2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is False


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://example.com/",
                                 "javascript:alert(1)", "data:text/plain,hi"])
async def test_non_http_schemes_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as info:
        await fetch_url(url, max_bytes=100, policy=LOOPBACK)
    assert info.value.code == "unsupported_scheme"


@pytest.mark.parametrize("url", ["not a url", "/relative/path", "http://", "http://user:pw@127.0.0.1/"])
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as info:
        await fetch_url(url, max_bytes=100, policy=LOOPBACK)
    assert info.value.code in {"invalid_url", "unsupported_scheme"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "2130706433", "0x7f.1", "127.1",
                                  "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_unless_allowed(host: str) -> None:
    async with Server(fixed(200, b"secret")) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(f"http://{host}:{server.port}/", max_bytes=100, policy=FetchPolicy())
    assert info.value.code == "forbidden_address"
    assert "non-public" in info.value.message
    assert server.requests == []


async def test_allowed_loopback_host_is_fetched_with_original_host_header() -> None:
    async with Server(fixed(200, b"hello", {"Content-Type": "Text/Plain; charset=utf-8"})) as server:
        got = await fetch_url(f"{server.url}/a?b=1", max_bytes=100, policy=LOOPBACK)
    assert (got.data, got.media_type, got.url) == (b"hello", "text/plain", f"{server.url}/a?b=1")
    assert server.requests[0][0] == "/a?b=1"
    assert server.requests[0][1]["host"] == f"127.0.0.1:{server.port}"


async def test_a_host_resolving_to_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        calls.append(host)
        return [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.7")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    with pytest.raises(FetchError) as info:
        await fetch_url("https://mixed.example.test/x", max_bytes=100, policy=FetchPolicy())
    assert info.value.code == "forbidden_address"
    assert "10.0.0.7" not in info.value.message  # internal DNS answers are not disclosed
    assert calls == ["mixed.example.test"]


async def test_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client never resolves the name again (no DNS-rebinding gap): a made-up name
    works only because the fetcher dials the address it validated."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        calls.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    policy = FetchPolicy(allowed_hosts=frozenset({"Media.Example.Test."}))
    async with Server(fixed(200, b"pinned")) as server:
        got = await fetch_url(f"http://media.example.test:{server.port}/p", max_bytes=100, policy=policy)
    assert got.data == b"pinned"
    assert got.url == f"http://media.example.test:{server.port}/p"
    assert server.requests[0][1]["host"] == f"media.example.test:{server.port}"
    assert calls == ["media.example.test"]


# --------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def _https_fetch(ca: trustme.CA, cert_name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, Server]:
    async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    policy = FetchPolicy(allowed_hosts=frozenset({"secure.example.test"}), ssl_context=client_ctx, timeout_seconds=5)
    async with Server(fixed(200, b"tls ok"), ssl_context=server_ctx) as server:
        got = await fetch_url(f"https://secure.example.test:{server.port}/", max_bytes=100, policy=policy)
    return got.data, server


async def test_https_verifies_the_certificate_for_the_original_name(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, server = await _https_fetch(ca, "secure.example.test", monkeypatch)
    assert data == b"tls ok"
    assert server.requests[0][1]["host"].startswith("secure.example.test:")


async def test_https_refuses_a_certificate_for_another_name(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FetchError) as info:
        await _https_fetch(ca, "other.example.test", monkeypatch)
    assert info.value.code == "connect_failed"
    assert "certificate" in info.value.message


# --------------------------------------------------------------------------- redirects


async def test_redirects_are_followed_and_rechecked() -> None:
    async def handler(target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if target == "/start":
            writer.write(response(302, headers={"Location": "/next?x=1"}))
        else:
            writer.write(response(200, b"arrived"))

    async with Server(handler) as server:
        got = await fetch_url(f"{server.url}/start", max_bytes=100, policy=LOOPBACK)
    assert got.data == b"arrived"
    assert got.url == f"{server.url}/next?x=1"
    assert [t for t, _ in server.requests] == ["/start", "/next?x=1"]


@pytest.mark.parametrize("location", ["http://localhost:{port}/secret", "http://169.254.169.254/latest/meta-data/",
                                      "http://[::1]:{port}/secret", "http://10.0.0.1/admin"])
async def test_redirect_to_a_forbidden_host_is_refused(location: str) -> None:
    async with Server(fixed(200)) as target:
        redirect = fixed(301, headers={"Location": location.format(port=target.port)})
        async with Server(redirect) as server:
            with pytest.raises(FetchError) as info:
                await fetch_url(f"{server.url}/start", max_bytes=100, policy=LOOPBACK)
    assert info.value.code == "forbidden_address"
    assert [t for t, _ in server.requests] == ["/start"]
    assert target.requests == []


async def test_redirect_to_another_scheme_is_refused() -> None:
    async with Server(fixed(302, headers={"Location": "file:///etc/passwd"})) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(f"{server.url}/", max_bytes=100, policy=LOOPBACK)
    assert info.value.code == "unsupported_scheme"


@pytest.mark.parametrize("max_redirects", [0, 2])
async def test_redirect_limit(max_redirects: int) -> None:
    async def loop_forever(target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        writer.write(response(307, headers={"Location": f"/r{len(server.requests)}"}))

    policy = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), max_redirects=max_redirects)
    async with Server(loop_forever) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(f"{server.url}/r0", max_bytes=100, policy=policy)
    assert info.value.code == "too_many_redirects"
    assert str(max_redirects) in info.value.message
    assert len(server.requests) == max_redirects + 1


# --------------------------------------------------------------------------- limits


async def test_non_2xx_names_the_status() -> None:
    async with Server(fixed(404, b"nope")) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(f"{server.url}/missing", max_bytes=100, policy=LOOPBACK)
    assert (info.value.code, info.value.status) == ("http_status", 404)
    assert "404" in info.value.message


async def test_body_exactly_at_the_limit_is_accepted_one_more_byte_is_not() -> None:
    async with Server(fixed(200, b"x" * 1000)) as server:
        assert len((await fetch_url(server.url, max_bytes=1000, policy=LOOPBACK)).data) == 1000
        with pytest.raises(FetchError) as info:
            await fetch_url(server.url, max_bytes=999, policy=LOOPBACK)
    assert info.value.code == "too_large"


async def test_endless_stream_is_cut_at_the_size_cap() -> None:
    sent = 0

    async def endless(target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
        while True:  # no Content-Length: only the reader's cap can stop this
            writer.write(b"\0" * 65536)
            sent += 65536
            await writer.drain()

    async with Server(endless) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(server.url, max_bytes=200_000, policy=LOOPBACK)
    assert info.value.code == "too_large"
    assert sent < 50 * 1024 * 1024


async def test_declared_oversize_content_length_is_refused_before_reading() -> None:
    async def liar(target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nabc")

    async with Server(liar) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(server.url, max_bytes=1000, policy=LOOPBACK)
    assert info.value.code == "too_large"


async def test_gzip_body_is_decoded_and_a_gzip_bomb_is_capped() -> None:
    small = gzip.compress(b"compressed text")
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 100_000
    async with Server(fixed(200, small, {"Content-Encoding": "gzip"})) as server:
        assert (await fetch_url(server.url, max_bytes=100, policy=LOOPBACK)).data == b"compressed text"
    async with Server(fixed(200, bomb, {"Content-Encoding": "gzip"})) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(server.url, max_bytes=1_000_000, policy=LOOPBACK)
    assert info.value.code == "too_large"


@pytest.mark.parametrize("behaviour", ["hang", "drip"])
async def test_total_timeout(behaviour: str) -> None:
    async def slow(target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if behaviour == "hang":
            await asyncio.sleep(3600)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while True:  # each byte arrives well within any per-read timeout; only a total deadline helps
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    policy = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=0.5)
    async with Server(slow) as server:
        started = time.monotonic()
        with pytest.raises(FetchError) as info:
            await fetch_url(server.url, max_bytes=1_000_000, policy=policy)
    assert info.value.code == "timeout"
    # The 100 kB trickle would take ~80 minutes: only the 0.5 s total deadline ends it this soon.
    assert time.monotonic() - started < 30


async def test_connect_failure_is_a_fetch_error() -> None:
    async with Server(fixed(200)) as server:
        port = server.port
    await asyncio.sleep(0)
    with pytest.raises(FetchError) as info:
        await fetch_url(f"http://127.0.0.1:{port}/", max_bytes=100, policy=LOOPBACK)
    assert info.value.code == "connect_failed"


# --------------------------------------------------------------------------- privacy


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    assert redact_url("https://u:p@Example.com:8443/a/b?token=s3cret#frag") == "https://example.com:8443/a/b"


async def test_query_strings_are_never_logged_or_echoed(caplog: pytest.LogCaptureFixture) -> None:
    """Query strings often carry signed tokens; neither our logs nor messages show them."""
    caplog.set_level(logging.DEBUG)
    async with Server(fixed(302, headers={"Location": "/next?token=s3cret-b"})) as server:
        with pytest.raises(FetchError) as info:
            await fetch_url(f"{server.url}/?token=s3cret-a", max_bytes=100,
                            policy=FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), max_redirects=1))
    with pytest.raises(FetchError) as refused:
        await fetch_url("http://127.0.0.1:9/?token=s3cret-c", max_bytes=100, policy=FetchPolicy())
    # httpcore's own DEBUG trace dumps raw response headers (for every client in the process);
    # what must stay clean is our logging and anything logged at INFO or above.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("kernel") or r.levelno >= logging.INFO]
    assert any("redirect" in m for m in ours) and any("refused" in m for m in ours)
    assert not [m for m in ours if "s3cret" in m]
    assert "s3cret" not in info.value.message + refused.value.message
