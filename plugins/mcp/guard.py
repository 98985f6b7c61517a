"""An httpx2 transport that only connects to addresses the kernel's fetch guard checked.

The MCP SDK builds its own HTTP requests; this transport (given to its ``httpx2`` client)
resolves and checks every request's host with :func:`kernel.fetch.checked_addresses`
and then dials the checked IP, keeping the ``Host`` header and the TLS name of the
original host, so a DNS answer that changes between check and connect cannot reach a
private address.
"""

from __future__ import annotations

import httpx2

from kernel.fetch import FetchError, checked_addresses


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Send each request to a checked address of its host (non-public ones refused unless allowed)."""

    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.allowed_hosts = allowed_hosts
        self._inner = httpx2.AsyncHTTPTransport(retries=0, trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        try:
            addresses = await checked_addresses(str(url), self.allowed_hosts)
        except FetchError as exc:
            raise httpx2.ConnectError(exc.message, request=request) from None
        host = url.host
        ip = str(addresses[0]).split("%", 1)[0]
        if ip != host:
            request.url = url.copy_with(host=ip)
            if url.scheme == "https":
                # Verify the certificate against the name the client gave, not the IP we dial.
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
