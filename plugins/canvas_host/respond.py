"""Build the HTTP response for an opened canvas file (GET and HEAD, ETag and 304)."""

from __future__ import annotations

import asyncio
import contextlib
import os

from quart import Response

from plugins.canvas_host.content import content_type, etag_for_bytes, etag_for_stat, inject, is_html, none_match
from plugins.canvas_host.fs import OpenFile, read_all

# Files up to this size are read whole, so their ETag is a hash of the exact bytes;
# larger ones are streamed and tagged by inode, size and times.
READ_WHOLE_BYTES = 1024 * 1024
# HTML gets the reload script, which means reading it whole; past this size (no real
# page is that big) it is streamed untouched instead, so memory stays bounded.
MAX_INJECT_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 256 * 1024

BASE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class FileStream:
    """An async iterator over an open file that owns (and always closes) its descriptor."""

    def __init__(self, fd: int, length: int) -> None:
        self._fd: int | None = fd
        self._remaining = length

    def __aiter__(self) -> FileStream:
        return self

    async def __anext__(self) -> bytes:
        if self._fd is None or self._remaining <= 0:
            self.close()
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(os.read, self._fd, min(CHUNK_BYTES, self._remaining))
        if not chunk:
            self.close()
            raise StopAsyncIteration
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        # A client that leaves before the first chunk never drives the iterator.
        self.close()


async def file_response(
    file: OpenFile, *, method: str, if_none_match: str | None, script: bytes
) -> Response:
    """The response for ``file`` (whose descriptor this takes over)."""
    ctype = content_type(file.name)
    injectable = is_html(ctype) and file.stat.st_size <= MAX_INJECT_BYTES
    size = file.stat.st_size
    stream: FileStream | None = None
    body = b""
    try:
        if injectable or size <= READ_WHOLE_BYTES:
            body = await asyncio.to_thread(read_all, file.fd, size)
            if injectable and script:
                body = inject(body, script)
            etag, length = etag_for_bytes(body), len(body)
        else:
            etag, length = etag_for_stat(file.stat), size
            if method != "HEAD" and not none_match(if_none_match, etag):
                stream, file.fd = FileStream(file.fd, size), -1
    finally:
        file.close()
    headers = {**BASE_HEADERS, "ETag": etag}
    if none_match(if_none_match, etag):
        not_modified = Response(b"", status=304, headers=headers)
        # A 304 has no body; a "Content-Length: 0" would misdescribe the resource.
        not_modified.headers.pop("Content-Length", None)
        return not_modified
    headers["Content-Type"] = ctype
    response = Response(stream if stream is not None else (b"" if method == "HEAD" else body), 200, headers)
    response.headers["Content-Length"] = str(length)
    return response
