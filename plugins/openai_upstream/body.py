"""Decoding an upstream body's ``Content-Encoding`` in bounded steps.

An HTTP client that decompresses each network read in one go (httpx does; aiohttp
bounds its steps only since 3.13.3) lets a small gzip read expand a thousandfold (a
"decompression bomb") before any size check sees it. The provider's client
(:mod:`.http1`) decodes nothing: the provider reads the raw bytes and decodes them
here, at most ``step`` bytes at a time, so every later limit (the line cap, the body
caps) applies to what is really held. Only ``gzip`` and
``deflate`` are offered to the upstream (``ACCEPT_ENCODING``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

ACCEPT_ENCODING = "gzip, deflate"
DECODE_STEP = 64 * 1024


class UnsupportedEncoding(ValueError):
    """The upstream used a ``Content-Encoding`` we did not offer."""


class BodyDecoder:
    """Raw body bytes -> decoded pieces of at most ``step`` bytes each."""

    def __init__(self, content_encoding: str, step: int = DECODE_STEP) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise UnsupportedEncoding(content_encoding)
        self.step = step
        self._deflate = codings == ["deflate"]
        self._started = False
        self._z: zlib._Decompress | None = None
        if codings:
            self._z = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 16 + zlib.MAX_WBITS)

    @property
    def identity(self) -> bool:
        """The body is not encoded: :meth:`decode` passes every piece through."""
        return self._z is None

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``data``; raises ``zlib.error`` for a corrupt body."""
        if self._z is None:
            if data:
                yield data
            return
        if not self._started and self._deflate and data:
            self._started = True
            try:  # "deflate" should be zlib-wrapped; some servers send raw deflate
                zlib.decompressobj().decompress(data[:64], 1)
            except zlib.error:
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        while not self._z.eof:
            out = self._z.decompress(data, self.step)
            data = self._z.unconsumed_tail
            if out:
                yield out
            # A full step may leave output pending inside zlib: ask again until it is drained.
            if not data and len(out) < self.step:
                break
