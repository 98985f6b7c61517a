"""What the upstream HTTP client must do besides streaming: TLS verification, proxies
from the environment (a real loopback proxy), and JSON read and written exactly."""

from __future__ import annotations

import asyncio
import json
import math
import ssl

import pytest
import trustme
from testsupport.fake_openai import FakeOpenAI, stream_reply, text_chunks

from kernel.app import get_kernel
from plugins.openai_upstream.client import ProxyConfigError
from plugins.openai_upstream.jsonio import dumps, loads
from plugins.openai_upstream.sse import LineSplitter, SseLimitError

from .conftest import API_KEY, upstream_config

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No proxy or trust-store variables from the machine running the tests."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_fake(tmp_path):
    """A fake upstream on https://127.0.0.1 with a certificate from a throwaway CA;
    yields (server, path of the CA's PEM)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeOpenAI(ssl_context=server_ctx) as server:
        yield server, str(ca_file)


async def test_tls_upstream_trusted_through_ssl_cert_file(make_app, tls_fake, user_turn, run_turn, monkeypatch):
    fake, ca_file = tls_fake
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    fake.script(stream_reply(text_chunks("over ", "tls")))
    app = make_app(upstream_config(fake.base_url))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert fake.base_url.startswith("https://")
    assert (result.status, result.text) == ("completed", "over tls")


async def test_tls_upstream_with_an_untrusted_certificate_is_refused(make_app, tls_fake, user_turn, run_turn):
    fake, _ = tls_fake  # the CA is in no trust store the provider uses
    fake.script(stream_reply(text_chunks("never sent")))
    app = make_app(upstream_config(fake.base_url, max_retries=0))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    err = result.error
    assert (err.status, err.code) == (502, "upstream_connection_error")
    assert err.message.startswith(f"provider 'up' (127.0.0.1:{fake.port}): request failed before a response: "
                                  "ConnectError: TLS certificate not trusted")
    assert fake.chat_requests == []  # the handshake failed: no request was sent


# --------------------------------------------------------------------------- proxies


class LoopbackProxy:
    """A forwarding HTTP proxy on 127.0.0.1: records each connection's request head,
    rewrites the absolute-form target to origin-form and pipes bytes both ways."""

    def __init__(self) -> None:
        self.heads: list[list[str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
            self.heads.append(head)
            method, target, version = head[0].split(" ")
            authority, _, path = target.removeprefix("http://").partition("/")
            host, _, port = authority.partition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            if method == "CONNECT":  # a tunnel for https: the bytes after this are TLS
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write("\r\n".join([f"{method} /{path} {version}", *head[1:], "", ""]).encode("latin-1"))
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


async def test_http_proxy_from_the_environment_is_used(make_app, fake, user_turn, run_turn, monkeypatch):
    fake.script(stream_reply(text_chunks("via ", "proxy")))
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:s3cret@127.0.0.1:{proxy.port}")
        app = make_app(upstream_config(fake.base_url))
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "via proxy")
    [head] = proxy.heads
    assert head[0] == f"POST http://127.0.0.1:{fake.port}/v1/chat/completions HTTP/1.1"
    # user:s3cret from the URL, and nothing else: the upstream key is no proxy credential.
    assert [h for h in head if h.lower().startswith("proxy-authorization:")] == [
        "Proxy-Authorization: Basic dXNlcjpzM2NyZXQ="]
    assert fake.chat_requests[0].path == "/v1/chat/completions"


async def test_https_through_a_proxy_tunnel_keeps_the_key_from_the_proxy(make_app, tls_fake, user_turn, run_turn,
                                                                         monkeypatch):
    """The CONNECT carries only the proxy's own headers: the upstream key travels inside
    the TLS tunnel (aiohttp once copied a session-level Authorization into the CONNECT)."""
    fake, ca_file = tls_fake
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    fake.script(stream_reply(text_chunks("tunnelled")))
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        app = make_app(upstream_config(fake.base_url))
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "tunnelled")
    [head] = proxy.heads
    assert head[0] == f"CONNECT 127.0.0.1:{fake.port} HTTP/1.1"
    assert not any(API_KEY in line for line in head), head
    assert fake.chat_requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_no_proxy_exempts_the_upstream_host(make_app, fake, user_turn, run_turn, monkeypatch):
    fake.script(stream_reply(text_chunks("direct")))
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        app = make_app(upstream_config(fake.base_url))
        async with app.test_app():
            _, result = await run_turn(app, user_turn())
    assert (result.status, result.text, proxy.heads) == ("completed", "direct", [])


async def test_a_proxy_the_client_cannot_speak_fails_at_start(make_app, fake, monkeypatch):
    """Connecting directly instead would silently bypass the operator's proxy."""
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    app = make_app(upstream_config(fake.base_url))
    with pytest.raises(Exception, match="uses socks5://, which this provider cannot use") as raised:
        async with app.test_app():
            pass
    assert raised.type is ProxyConfigError or "startup" in str(raised.value)  # Quart wraps startup errors


async def test_configured_headers_replace_defaults_whatever_their_case(make_app, fake, user_turn, run_turn):
    fake.script(stream_reply(text_chunks("ok")))
    app = make_app(upstream_config(fake.base_url, headers={"authorization": "Bearer other", "content-type": "x/y",
                                                            "X-Extra": "1"}))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
        block = get_kernel(app).providers["up"]._setup.headers  # the header lines every request carries
        names = [line.split(b":", 1)[0].decode().lower() for line in block.split(b"\r\n") if line]
    assert result.status == "completed"
    assert names.count("authorization") == 1 and names.count("content-type") == 1
    headers = fake.chat_requests[0].headers
    assert (headers["authorization"], headers["content-type"], headers["x-extra"]) == (
        "Bearer other", "application/json", "1")


async def test_configured_framing_headers_never_reach_the_wire_twice(make_app, fake, user_turn, run_turn):
    """Content-Length, Transfer-Encoding and Connection are the client's own; a configured
    Host replaces the one made from the URL (a virtual host behind a shared address)."""
    fake.script(stream_reply(text_chunks("framed")))
    app = make_app(upstream_config(fake.base_url, headers={
        "Host": "api.example.test", "content-length": "5", "Transfer-Encoding": "chunked", "Connection": "close"}))
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert (result.status, result.text) == ("completed", "framed")
    [request] = fake.chat_requests
    assert request.headers["host"] == "api.example.test"
    assert request.headers["content-length"] == str(len(request.body))
    assert "transfer-encoding" not in request.headers and "connection" not in request.headers


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("text", [
    '{"a": NaN, "b": Infinity}', '{"s": "\\ud83d"}', '{"s": "caf\\u00e9 \u2028 ok"}', '[1.5e308, -0.0]',
])
def test_chunks_decode_as_the_standard_library_does(text):
    got, want = loads(text), json.loads(text)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and -0.0 == 0.0


def test_integers_beyond_64_bits_are_read_as_floats():
    """orjson's one difference from json that is kept: every number the decoder uses
    is bounded far below 2**63, so such a value counts as missing either way."""
    chunk = loads('{"usage": {"prompt_tokens": 1000000000000000000000000000000, "completion_tokens": 4}}')
    assert chunk["usage"]["prompt_tokens"] == 1e30 and loads("18446744073709551615") == 2**64 - 1


def test_a_malformed_chunk_keeps_the_standard_librarys_message():
    with pytest.raises(ValueError, match=r"Expecting ',' delimiter: line 1 column 9 \(char 8\)"):
        loads('{"a": 1 "b": 2}')


@pytest.mark.parametrize("value", [
    {"model": "m", "messages": [{"role": "user", "content": "héllo \u2028 😀"}], "stream": True},
    {"n": 10**30}, {"s": "\ud83d"}, {1: "int key"},
])
def test_request_bodies_are_the_same_json_value(value):
    body = dumps(value)
    assert isinstance(body, bytes) and json.loads(body) == json.loads(json.dumps(value))


def test_nan_in_a_body_is_null_not_invalid_json():
    assert json.loads(dumps({"t": math.nan})) == {"t": None}


# --------------------------------------------------------------------------- lines across big reads


def test_complete_lines_before_a_runaway_line_are_returned_first():
    """A client may hand over many events and the start of an endless line in one
    read: the events are delivered, then the limit fails the stream."""
    splitter = LineSplitter(max_line=1024)
    assert splitter.feed(b'data: {"a": 1}\n\n' + b"x" * 2000) == ['data: {"a": 1}', ""]
    assert splitter.held == 0
    with pytest.raises(SseLimitError):
        splitter.feed(b"more")
    splitter = LineSplitter(max_line=1024)
    assert splitter.feed(b"data: b\n" + b"y" * 2000 + b"\nnever\n") == ["data: b"]
    with pytest.raises(SseLimitError):
        splitter.flush()
    with pytest.raises(SseLimitError):
        LineSplitter(max_line=1024).feed(b"z" * 2000)
