"""The upstream HTTP client's recipe: headers, timeouts, trust store and proxy, read once.

Requests go through :class:`~plugins.openai_upstream.http1.Http1Client`, a lean
HTTP/1.1 client (httpx, used first, cost 3-5x more CPU per streamed request than
aiohttp's client; aiohttp's in turn about twice this one's, see that module). What
httpx gave by default is kept explicitly here:

* proxies from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
  ``NO_PROXY``, either case), resolved once per provider: its URL never changes (no
  ``~/.netrc`` credentials either, which would replace the configured key);
* TLS verification against ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else
  certifi's bundle (httpx's default), else the system store;
* no redirects, no body decompression by the client (:mod:`.body` decodes in bounded
  steps), and no cookie jar (requests carry their key; nothing is kept between runs).

Error texts use a small fixed vocabulary (``ConnectError``, ``RemoteProtocolError``,
``ReadError``), so messages stay the same whatever the client (operators match on them).
"""

from __future__ import annotations

import base64
import errno
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from plugins.openai_upstream.body import ACCEPT_ENCODING
from plugins.openai_upstream.http1 import ConnectFailed, Http1Client, UpstreamTransportError, header_block
from plugins.openai_upstream.settings import UpstreamOptions

# Headers the client writes itself (with Content-Type, which every request sets).
FRAMING_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "connection", "host"})


class ProxyConfigError(ValueError):
    """A proxy from the environment that this client cannot use (e.g. ``socks5://``)."""


@dataclass(frozen=True, slots=True)
class ClientSetup:
    """Everything one provider's clients are built from (read once)."""

    url: str
    # Sent with every request. The upstream key is never among the proxy_headers of a
    # CONNECT: a tunnelling proxy never sees it.
    header_map: dict[str, str]
    connect_timeout: float | None
    read_timeout: float | None
    ssl_context: ssl.SSLContext
    proxy: str | None = None
    # A configured Host header replaces the one made from the URL (virtual hosting).
    host_header: str | None = None
    # Proxy-Authorization from the proxy URL's user:password, when it has one: on the
    # CONNECT request for an https upstream, in each request's headers for http.
    proxy_headers: dict[str, str] | None = None
    # header_map as a header block: validated and encoded once, sent as is.
    headers: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", header_block(self.header_map))

    def headers_with(self, extra: dict[str, str]) -> bytes:
        """The header block with ``extra`` (e.g. ``traceparent``), which replaces a configured
        header of the same name (whatever its case) rather than repeating it."""
        names = {name.lower() for name in extra}
        if not any(name.lower() in names for name in self.header_map):
            return self.headers + header_block(extra)
        kept = {name: value for name, value in self.header_map.items() if name.lower() not in names}
        return header_block({**kept, **extra})

    def client(self) -> Http1Client:
        """A new client (on the running loop) with its own connection pool."""
        return Http1Client(self.url, ssl_context=self.ssl_context, connect_timeout=self.connect_timeout,
                           read_timeout=self.read_timeout, proxy=self.proxy, proxy_headers=self.proxy_headers,
                           host_header=self.host_header)


def client_setup(opts: UpstreamOptions, url: str, user_agent: str) -> ClientSetup:
    """The client recipe for ``opts`` (raises :class:`ProxyConfigError`)."""
    # Only the encodings BodyDecoder decodes in bounded steps.
    headers = {"User-Agent": user_agent, "Accept": "text/event-stream", "Accept-Encoding": ACCEPT_ENCODING}
    if opts.api_key is not None:
        headers["Authorization"] = f"Bearer {opts.api_key.get_secret_value()}"
    # Configured headers may override the ones above (header names are case-insensitive).
    lowered = {name.lower(): name for name in headers}
    for name, value in opts.headers.items():
        headers.pop(lowered.get(name.lower(), name), None)
        headers[name] = value
    # Every request is a JSON POST: this replaces any configured Content-Type. The body's
    # framing and the connection are the client's own (a second Content-Length would make
    # the request ambiguous); a configured Host replaces the URL's.
    host_header = None
    for name in [n for n in headers if n.lower() in FRAMING_HEADERS]:
        value = headers.pop(name)
        if name.lower() == "host":
            host_header = value
    headers["Content-Type"] = "application/json"
    proxy, proxy_auth = env_proxy(url)
    auth = None if proxy_auth is None else {"Proxy-Authorization": proxy_auth}
    tunnelled = urlsplit(url).scheme == "https"
    if auth is not None and not tunnelled:
        headers.update(auth)
    # total_timeout is the provider's own deadline (slot wait and retries included);
    # connect_timeout covers TCP connect, a proxy's CONNECT and the TLS handshake (the
    # provider's slots keep a pool wait from ever being part of it); read_timeout is the
    # longest silence: waiting for the response head, then between body reads.
    return ClientSetup(url=url, header_map=headers,
                       connect_timeout=opts.connect_timeout, read_timeout=opts.read_timeout,
                       ssl_context=trust_store(), proxy=proxy, proxy_headers=auth if tunnelled else None,
                       host_header=host_header)


def env_proxy(url: str) -> tuple[str | None, str | None]:
    """The proxy the environment names for ``url`` (httpx's rules: the scheme's
    ``*_PROXY``, else ``ALL_PROXY``; ``NO_PROXY`` exempts hosts), without its
    credentials, and the ``Proxy-Authorization`` value those make (``None`` without)."""
    target = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    raw = proxies.get(target.scheme) or proxies.get("all")
    if not raw or (target.hostname and urllib.request.proxy_bypass_environment(target.hostname, proxies)):
        return None, None
    if "://" not in raw:
        raw = f"http://{raw}"  # HTTP_PROXY=host:port, as httpx reads it
    proxy = urlsplit(raw)
    if proxy.scheme not in ("http", "https"):
        # Connecting directly instead would bypass the proxy the operator set.
        raise ProxyConfigError(f"the proxy for {target.scheme} requests from the environment uses "
                               f"{proxy.scheme}://, which this provider cannot use (http:// or https:// only)")
    if not proxy.hostname:
        raise ProxyConfigError(f"the proxy for {target.scheme} requests from the environment names no host")
    auth = None
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        auth = "Basic " + base64.b64encode(credentials.encode("latin-1")).decode("ascii")
    host = f"[{proxy.hostname}]" if ":" in proxy.hostname else proxy.hostname
    port = f":{proxy.port}" if proxy.port else ""
    return f"{proxy.scheme}://{host}{port}", auth


def trust_store() -> ssl.SSLContext:
    """The CA bundle httpx would have used: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else
    certifi's, else the system's. Verification and hostname checks stay on."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


_RESET = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def describe_error(exc: BaseException) -> str:
    """A transport error in a few words, ``Kind: detail`` (never headers or bodies)."""
    if isinstance(exc, ConnectFailed):
        kind, detail = "ConnectError", _os_detail(exc.os_error) if exc.os_error is not None else str(exc)
    elif isinstance(exc, UpstreamTransportError):
        kind, detail = exc.kind, str(exc)
    elif isinstance(exc, OSError) and exc.errno in _RESET:
        kind, detail = "RemoteProtocolError", _os_detail(exc)
    elif isinstance(exc, OSError):
        kind, detail = "ReadError", _os_detail(exc)
    else:
        kind, detail = "RemoteProtocolError", str(exc)
    detail = " ".join(detail.split())
    return f"{kind}: {detail}" if detail else kind


def _os_detail(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    return exc.strerror or str(exc) or type(exc).__name__
