"""Guarded fetching of user-supplied URLs (the kernel's SSRF defence).

A client may hand us any URL (an image to look at, a file to read). Fetching it
naively would let a client reach the gateway's private network, its cloud metadata
endpoint or its loopback services. :func:`fetch_url` therefore:

* accepts only ``http``/``https`` URLs without credentials;
* resolves the host itself and refuses if *any* resolved address is non-public
  (see :func:`is_forbidden_address`), unless the host is in ``allowed_hosts``;
* connects to the very address it checked (the URL is rewritten to the IP, the
  ``Host`` header and the TLS SNI/certificate name stay the original host), so a
  DNS answer that changes between check and connect (DNS rebinding) cannot slip by;
* follows redirects by hand, checking every hop again, at most ``max_redirects``;
* bounds the whole exchange by one deadline and stops reading past ``max_bytes``.

It talks to httpx's transport directly rather than through ``httpx.AsyncClient``:
the client logs every request URL (query string included) and honours proxy
environment variables, neither of which we want here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import zlib
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A host with many addresses is tried on at most this many (all are checked first).
_MAX_CONNECT_ATTEMPTS = 4


class FetchError(Exception):
    """The URL could not be fetched; ``message`` is safe to show the client.

    ``code`` says why (``invalid_url``, ``unsupported_scheme``, ``dns_failed``,
    ``forbidden_address``, ``connect_failed``, ``timeout``, ``too_many_redirects``,
    ``http_status``, ``too_large``, ``fetch_failed``); ``status`` is the upstream HTTP
    status for ``http_status``.
    """

    def __init__(self, message: str, *, code: str = "fetch_failed", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may do. ``allowed_hosts`` are host names or IPs that may be
    fetched even though they resolve to non-public addresses (e.g. ``127.0.0.1`` in
    tests, an internal media server in a deployment)."""

    allowed_hosts: frozenset[str] = frozenset()
    max_redirects: int = 3
    timeout_seconds: float = 10.0
    # Trust store for https; None means httpx's default (certifi). Tests pass their own CA.
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass
class Fetched:
    """A fetched body. ``media_type`` is the Content-Type without parameters
    (lower-case) or None; ``url`` is the final URL after redirects."""

    data: bytes
    media_type: str | None
    url: str


# --------------------------------------------------------------------------- addresses

# Spelled out rather than trusting only ipaddress.is_global, whose tables changed
# between Python patch releases (and which calls 224.0.0.0/4 "global").
_V4_FORBIDDEN = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)
_V6_FORBIDDEN = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)
# Only 2000::/3 is global unicast; everything outside it (bar the embedded forms) is refused.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 (64:ff9b::/96) address reaches."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden_address(ip: IPAddress) -> bool:
    """True if ``ip`` is not a public unicast address a fetch may connect to.

    Refused: private, loopback, link-local, multicast, reserved, unspecified,
    shared/CGNAT (100.64/10), documentation and benchmarking ranges, and every IPv6
    form that embeds such an IPv4 address (IPv4-mapped, 6to4, NAT64).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # a zone index only makes sense for link-local destinations
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_forbidden_address(embedded)
        if ip not in _V6_GLOBAL_UNICAST or any(ip in net for net in _V6_FORBIDDEN):
            return True
    elif any(ip in net for net in _V4_FORBIDDEN):
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    ip = _parse_ip(host)
    return str(ip) if ip is not None else host


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order (tests replace this)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"could not resolve host {host!r}", code="dns_failed") from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        if isinstance(ip, ipaddress.IPv6Address) and not ip.scope_id and len(sockaddr) > 3 and sockaddr[3]:
            ip = ipaddress.IPv6Address(f"{ip}%{sockaddr[3]}")
        if ip not in addresses:
            addresses.append(ip)
    return addresses


# --------------------------------------------------------------------------- urls


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without credentials, query string or fragment: safe for logs and messages."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    netloc = parsed.netloc.decode("ascii", "replace")
    return f"{parsed.scheme}://{netloc}{parsed.path}" if parsed.scheme else "<relative URL>"


def _check_url(raw: str | httpx.URL) -> httpx.URL:
    """Parse ``raw`` and refuse anything but credential-free http(s) URLs with a host."""
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("the URL is not a valid absolute http(s) URL", code="invalid_url") from None
    if url.scheme not in ("http", "https"):
        shown = url.scheme or "none"
        raise FetchError(f"only http and https URLs can be fetched (scheme was {shown!r})", code="unsupported_scheme")
    if not url.host:
        raise FetchError("the URL has no host", code="invalid_url")
    if url.userinfo:
        raise FetchError("URLs with embedded credentials (user:password@) are not accepted", code="invalid_url")
    return url


# --------------------------------------------------------------------------- fetching


async def fetch_url(url: str, *, max_bytes: int, policy: FetchPolicy) -> Fetched:
    """GET ``url`` under ``policy`` and return its body (at most ``max_bytes``).

    Raises :class:`FetchError` for anything the guard refuses or that fails: a
    forbidden address, a non-2xx status, too many redirects, a body larger than
    ``max_bytes``, or the overall ``policy.timeout_seconds`` deadline passing.
    """
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            return await _fetch(url, max_bytes, policy)
    except TimeoutError:
        raise FetchError(
            f"fetching {redact_url(url)} took longer than {policy.timeout_seconds:g} s", code="timeout"
        ) from None


async def _fetch(raw_url: str, max_bytes: int, policy: FetchPolicy) -> Fetched:
    url = _check_url(raw_url)
    allowed = frozenset(_normalise_host(h) for h in policy.allowed_hosts)
    verify: ssl.SSLContext | bool = policy.ssl_context if policy.ssl_context is not None else True
    # retries=0: a retry would reconnect without our address check in between. No keep-alive:
    # pooled connections are keyed by IP, so a redirect to another name on the same IP
    # would otherwise reuse a TLS session verified for the first name.
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncHTTPTransport(verify=verify, trust_env=False, retries=0, limits=no_reuse) as transport:
        max_redirects = max(policy.max_redirects, 0)
        for hop in range(max_redirects + 1):
            response = await _send(transport, url, allowed, policy.timeout_seconds)
            try:
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{url.host} answered HTTP {status} without a Location", code="http_status",
                                         status=status)
                    if hop == max_redirects:
                        raise FetchError(f"too many redirects (more than {max_redirects})",
                                         code="too_many_redirects")
                    try:
                        target = url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise FetchError(f"{url.host} redirected to an invalid URL", code="invalid_url") from None
                    url = _check_url(target)
                    log.debug("fetch: redirect %d to %s", status, redact_url(url))
                    continue
                if not 200 <= status < 300:
                    raise FetchError(f"{url.host} answered HTTP {status}", code="http_status", status=status)
                data = await _read_capped(response, max_bytes)
                content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                return Fetched(data=data, media_type=content_type or None, url=str(url))
            finally:
                await response.aclose()
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


async def _send(transport: httpx.AsyncHTTPTransport, url: httpx.URL, allowed: frozenset[str],
                io_seconds: float) -> httpx.Response:
    """Check ``url``'s host and send one GET to a validated address of it."""
    host = url.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = _parse_ip(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    if not addresses:
        raise FetchError(f"could not resolve host {host!r}", code="dns_failed")
    if _normalise_host(host) not in allowed:
        forbidden = [ip for ip in addresses if is_forbidden_address(ip)]
        if forbidden:
            log.info("fetch: refused %s: resolves to non-public %s", redact_url(url), forbidden[0])
            raise FetchError(
                f"refusing to fetch from {host!r}: it resolves to a non-public address (private, loopback, "
                "link-local, multicast or reserved); only public hosts can be fetched",
                code="forbidden_address",
            )
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "gzip, deflate, identity;q=0.5",
               "User-Agent": "agentkernel-fetch/1", "Accept": "*/*"}
    extensions: dict[str, object] = {"timeout": httpx.Timeout(io_seconds).as_dict()}
    if url.scheme == "https":
        # Verify the certificate against the name the client gave, not the IP we dial.
        extensions["sni_hostname"] = host
    last_error: httpx.HTTPError | None = None
    for ip in addresses[:_MAX_CONNECT_ATTEMPTS]:
        target = url.copy_with(host=str(ip).split("%", 1)[0]) if literal is None else url
        request = httpx.Request("GET", target, headers=headers, extensions=extensions)
        try:
            return await transport.handle_async_request(request)
        except httpx.ConnectError as exc:
            last_error = exc
            continue
        except httpx.TimeoutException:
            raise FetchError(f"connecting to {host} timed out", code="timeout") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"request to {host} failed ({type(exc).__name__})") from None
    if last_error is not None and "CERTIFICATE_VERIFY_FAILED" in str(last_error):
        raise FetchError(f"the TLS certificate of {host} could not be verified", code="connect_failed")
    raise FetchError(f"could not connect to {host} on port {port}", code="connect_failed")


def _decoder(encoding: str) -> zlib._Decompress | None:
    """A streaming decoder for ``Content-Encoding`` (identity -> None)."""
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise FetchError(f"unsupported Content-Encoding {encoding!r}", code="fetch_failed")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """Read the body, stopping as soon as it (decoded) exceeds ``max_bytes``."""
    declared = response.headers.get("content-length", "")
    too_large = FetchError(f"the response is larger than the limit of {max_bytes} bytes", code="too_large")
    if declared.isdigit() and int(declared) > max_bytes and "content-encoding" not in response.headers:
        raise too_large
    decoder = _decoder(response.headers.get("content-encoding", "").strip().lower())
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            if decoder is not None:
                # max_length bounds a compression bomb to what we would keep anyway.
                chunk = decoder.decompress(chunk, max_bytes - len(body) + 1)
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    except httpx.TimeoutException:
        raise FetchError("reading the response timed out", code="timeout") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"reading the response failed ({type(exc).__name__})") from None
    except zlib.error:
        raise FetchError("the response's compressed body is corrupt") from None
    return bytes(body)


# --------------------------------------------------------------------------- guarded connections


async def checked_addresses(url: str, allowed_hosts: frozenset[str] | set[str] | list[str]) -> list[IPAddress]:
    """The addresses a client of ``url`` may connect to, after the same checks as :func:`fetch_url`.

    For callers that speak their own protocol over HTTP (e.g. an MCP client): they connect
    to one of these addresses (not to a fresh DNS answer), so DNS rebinding cannot slip by.
    Raises :class:`FetchError` for an invalid URL, a failed lookup or a non-public address
    whose host is not in ``allowed_hosts``.
    """
    parsed = _check_url(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _parse_ip(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    if not addresses:
        raise FetchError(f"could not resolve host {host!r}", code="dns_failed")
    allowed = frozenset(_normalise_host(h) for h in allowed_hosts)
    if _normalise_host(host) not in allowed and any(is_forbidden_address(ip) for ip in addresses):
        raise FetchError(f"refusing to connect to {host!r}: it resolves to a non-public address (private, "
                         "loopback, link-local, multicast or reserved); only public hosts are allowed",
                         code="forbidden_address")
    return addresses
