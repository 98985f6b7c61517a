"""The upstream HTTP client: an aiohttp session and what it is built from.

httpx (used before) cost 3-5x more CPU per streamed request than aiohttp's client on
the same workload, so the provider speaks aiohttp. What httpx gave by default is kept
explicitly here:

* proxies from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
  ``NO_PROXY``, either case), resolved once per provider: its URL never changes, so
  aiohttp's own ``trust_env`` lookup (two thread hops per request, plus ``~/.netrc``
  credentials that would replace the configured key) is not used;
* TLS verification against ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else
  certifi's bundle (httpx's default), else the system store;
* no redirects, no body decompression by the client (:mod:`.body` decodes in bounded
  steps), and no cookie jar (requests carry their key; nothing is kept between runs).

Error texts use a small fixed vocabulary (``ConnectError``, ``RemoteProtocolError``,
``ReadError``) rather than aiohttp's class names, so messages stay the same whatever
the client library (operators match on them).
"""

from __future__ import annotations

import errno
import os
import ssl
import urllib.request
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from plugins.openai_upstream.body import ACCEPT_ENCODING
from plugins.openai_upstream.settings import UpstreamOptions

# aiohttp's read buffer per connection (its default): reading pauses above twice this.
READ_BUFSIZE = 64 * 1024


class ProxyConfigError(ValueError):
    """A proxy from the environment that aiohttp cannot use (e.g. ``socks5://``)."""


@dataclass(frozen=True, slots=True)
class ClientSetup:
    """Everything one provider's sessions are built from (read once)."""

    # Sent per request, never as the session's default headers: aiohttp 3.14 copies a
    # session-level Authorization into the Proxy-Authorization of the request (or
    # CONNECT) it sends a proxy, which would hand the upstream key to the proxy.
    headers: CIMultiDict[str]
    timeout: aiohttp.ClientTimeout
    ssl_context: ssl.SSLContext
    limit: int
    proxy: URL | None = None
    # Proxy-Authorization from the proxy URL's user:password, when it has one: on the
    # CONNECT request for an https upstream, in each request's headers for http
    # (aiohttp sends proxy_headers only on CONNECT, and its proxy_auth is deprecated).
    proxy_headers: dict[str, str] | None = None

    def session(self) -> aiohttp.ClientSession:
        """A new session (on the running loop) with its own connection pool."""
        connector = aiohttp.TCPConnector(
            limit=self.limit, limit_per_host=0, ssl=self.ssl_context,
            # getaddrinfo in a thread, like httpx (aiodns, when installed, would
            # otherwise be picked and resolve differently).
            resolver=aiohttp.ThreadedResolver(),
        )
        return aiohttp.ClientSession(
            connector=connector, timeout=self.timeout,
            auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            read_bufsize=READ_BUFSIZE, raise_for_status=False,
        )


def client_setup(opts: UpstreamOptions, url: str, user_agent: str) -> ClientSetup:
    """The session recipe for ``opts`` (raises :class:`ProxyConfigError`)."""
    # Only the encodings BodyDecoder decodes in bounded steps.
    headers = {"User-Agent": user_agent, "Accept": "text/event-stream", "Accept-Encoding": ACCEPT_ENCODING}
    if opts.api_key is not None:
        headers["Authorization"] = f"Bearer {opts.api_key.get_secret_value()}"
    # Configured headers may override the ones above (header names are case-insensitive).
    lowered = {name.lower(): name for name in headers}
    for name, value in opts.headers.items():
        headers.pop(lowered.get(name.lower(), name), None)
        headers[name] = value
    # Every request is a JSON POST: this replaces any configured Content-Type.
    for name in [n for n in headers if n.lower() == "content-type"]:
        del headers[name]
    headers["Content-Type"] = "application/json"
    timeout = aiohttp.ClientTimeout(
        total=None,  # total_timeout is the provider's own deadline (slot wait and retries included)
        # Pool wait + TCP connect + TLS handshake. The provider's slots keep the pool
        # from ever being the wait, as httpx's pool timeout (= connect_timeout) did.
        connect=opts.connect_timeout,
        sock_connect=opts.connect_timeout,
        # Longest silence: waiting for the response head, then between body reads.
        sock_read=opts.read_timeout,
    )
    proxy, proxy_auth = env_proxy(url)
    auth = None if proxy_auth is None else {"Proxy-Authorization": proxy_auth.encode()}
    tunnelled = URL(url).scheme == "https"
    if auth is not None and not tunnelled:
        headers.update(auth)
    return ClientSetup(headers=CIMultiDict(headers), timeout=timeout, ssl_context=trust_store(),
                       limit=opts.max_concurrency, proxy=proxy, proxy_headers=auth if tunnelled else None)


def env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (httpx's rules: the scheme's
    ``*_PROXY``, else ``ALL_PROXY``; ``NO_PROXY`` exempts hosts)."""
    target = URL(url)
    proxies = urllib.request.getproxies_environment()
    raw = proxies.get(target.scheme) or proxies.get("all")
    if not raw or (target.host is not None and urllib.request.proxy_bypass_environment(target.host, proxies)):
        return None, None
    if "://" not in raw:
        raw = f"http://{raw}"  # HTTP_PROXY=host:port, as httpx reads it
    proxy = URL(raw)
    if proxy.scheme not in ("http", "https"):
        # Connecting directly instead would bypass the proxy the operator set.
        raise ProxyConfigError(f"the proxy for {target.scheme} requests from the environment uses "
                               f"{proxy.scheme}://, which this provider cannot use (http:// or https:// only)")
    auth = aiohttp.BasicAuth.from_url(proxy)
    return proxy.with_user(None), auth


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
    if isinstance(exc, aiohttp.ClientConnectorError):
        kind, detail = "ConnectError", _os_detail(exc.os_error)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind, detail = "RemoteProtocolError", "the server closed the connection"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind, detail = "RemoteProtocolError", _cause_detail(exc)
    elif isinstance(exc, aiohttp.ClientResponseError):
        kind, detail = "RemoteProtocolError", exc.message or str(exc)
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


def _cause_detail(exc: aiohttp.ClientPayloadError) -> str:
    # "Response payload is not completed: <TransferEncodingError: 400, message='Not
    # enough data to satisfy transfer length header.'>" is aiohttp's text.
    return "the response body ended early" if "not completed" in str(exc) else str(exc)
