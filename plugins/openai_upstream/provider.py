"""The ``openai_upstream`` provider: one instance per ``[providers.NAME]`` table.

A turn becomes one streaming ``POST {base_url}/chat/completions``. Connection errors
and retryable answers are retried only before the first body byte; once a stream has
started, a fault fails the run and whatever was already streamed stays in it. The
HTTP response is closed before the terminal event is yielded, on every error and on
cancellation, so a connection is never left dangling.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from kernel import Finished, ProviderError, RunError, RunEvent, Turn
from kernel.observe import Observers
from plugins.openai_upstream.body import ACCEPT_ENCODING, BodyDecoder, UnsupportedEncoding
from plugins.openai_upstream.client import ClientSetup, client_setup, describe_error
from plugins.openai_upstream.custom_tools import CustomCallFilter
from plugins.openai_upstream.decode import ChunkDecoder, UpstreamFormatError
from plugins.openai_upstream.faults import (
    RETRYABLE_STATUSES,
    bad_response,
    connection_error,
    http_status_error,
    retry_after_seconds,
    timeout_error,
    upstream_error_detail,
)
from plugins.openai_upstream.http1 import (
    ConnectTimeout,
    Http1Client,
    Http1Response,
    ReadTimeout,
    UpstreamTransportError,
)
from plugins.openai_upstream.jsonio import dumps, loads
from plugins.openai_upstream.request import build_body
from plugins.openai_upstream.settings import UpstreamOptions
from plugins.openai_upstream.sse import LineSplitter, SseLimitError, SseParser, plain_data_events

log = logging.getLogger("plugins.openai_upstream")

# The body's next piece (``None`` at its end).
NextPiece = Callable[[], Awaitable[bytes | None]]

# An error answer is read only for its message: the first 64 KiB say enough.
MAX_ERROR_BODY = 64 * 1024
# After [DONE], how much of the body's tail is read to keep the connection reusable.
DRAIN_LINES = 16
DRAIN_SECONDS = 1.0
USER_AGENT = "agentkernel-openai-upstream/0.1"


class UpstreamProvider:
    """Streams turns from an OpenAI-compatible Chat Completions server."""

    def __init__(self, name: str, options: UpstreamOptions, *, observers: Observers | None = None) -> None:
        self.name = name
        # Metrics and traces: told of retries, and asked for headers (traceparent) per request.
        self.observers = observers if observers is not None else Observers()
        self.options = options
        self.accepts_images = options.accepts_images
        self.label = f"provider {name!r} ({options.host})"
        self.url = f"{options.base_url}/chat/completions"
        self._client: Http1Client | None = None
        self._setup: ClientSetup | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def health(self) -> dict[str, object]:
        """The upstream host and its concurrency cap (the console's overview shows it).

        No probe is sent: reachability shows in the runs' own errors.
        """
        return {"ok": True, "host": self.options.host, "client_ready": self._client is not None,
                "max_concurrency": self.options.max_concurrency}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the HTTP client on the serving loop (the kernel calls this at startup)."""
        self._resources()

    async def aclose(self) -> None:
        """Close the HTTP client and its pooled connections."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    def _resources(self) -> tuple[Http1Client, asyncio.Semaphore]:
        # The client and the semaphore belong to one event loop; an app served again
        # on a new loop (tests do this) gets fresh ones.
        loop = asyncio.get_running_loop()
        if self._client is None or self._slots is None or self._loop is not loop:
            if self._setup is None:
                # Proxy, trust store and headers come from the settings and the
                # environment, read once (as httpx read them once per client).
                self._setup = client_setup(self.options, self.url, USER_AGENT)
            self._client = self._setup.client()
            self._slots = asyncio.Semaphore(self.options.max_concurrency)
            self._loop = loop
        return self._client, self._slots

    # ------------------------------------------------------------------ streaming

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        """Run one turn against the upstream; see the module docstring for fault rules."""
        body = build_body(turn, self.options)
        if not body.get("model"):
            raise ProviderError(RunError(
                f"{self.label}: no upstream model to ask for; set model in this [providers] table, "
                "the agent's model, or send a model name", code="model_not_configured", status=500,
            ))
        client, slots = self._resources()
        deadline = self._deadline()
        decoder = ChunkDecoder()
        custom = CustomCallFilter({t.name for t in turn.tools if t.tool_kind == "custom"})
        async with self._slot(slots, deadline):
            response = await self._open(client, dumps(body), deadline)
            try:
                async for batch in self._batches(response, decoder, deadline):
                    for ev in batch:
                        passed = custom.apply(ev)
                        if passed is not None:
                            yield passed
            finally:
                _finish(response)
        for ev in decoder.close_calls():
            passed = custom.apply(ev)
            if passed is not None:
                yield passed
        if decoder.usage is not None:
            yield decoder.usage
        yield Finished(reason=decoder.final_reason())

    def _deadline(self) -> float | None:
        total = self.options.total_timeout
        return None if total is None else asyncio.get_running_loop().time() + total

    @asynccontextmanager
    async def _slot(self, slots: asyncio.Semaphore, deadline: float | None) -> AsyncIterator[None]:
        try:
            if slots.locked():  # (a free slot is taken without waiting: no timer needed)
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            else:
                await slots.acquire()
        except TimeoutError:
            raise ProviderError(timeout_error(
                self.label, f"no free request slot within total_timeout = {self.options.total_timeout:g}s "
                f"(max_concurrency = {self.options.max_concurrency} requests were in flight)",
            )) from None
        try:
            yield
        finally:
            slots.release()

    # ------------------------------------------------------------------ opening, with retries

    async def _open(self, client: Http1Client, content: bytes, deadline: float | None) -> Http1Response:
        """A response with a 2xx status whose body has not been read yet."""
        opts = self.options
        loop = asyncio.get_running_loop()
        assert self._setup is not None
        setup = self._setup
        headers = setup.headers
        if self.observers:
            extra = self.observers.outgoing_headers()
            if extra:  # traceparent, when tracing is on
                headers = setup.headers_with(extra)
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                # No redirects (httpx followed none either: a 3xx is an error answer). The
                # client enforces the deadline on its own read timer, for the body's reads too.
                response = await client.post(content, headers, deadline)
            except ConnectTimeout:
                failure = timeout_error(self.label, f"could not connect within connect_timeout = "
                                                    f"{opts.connect_timeout:g}s")
            except ReadTimeout:
                raise ProviderError(timeout_error(
                    self.label, f"sent no response within read_timeout = {opts.read_timeout:g}s",
                )) from None
            except TimeoutError:
                raise ProviderError(self._total_timeout("waiting for the response")) from None
            except (UpstreamTransportError, OSError) as exc:
                failure = connection_error(self.label, f"request failed before a response: {describe_error(exc)}")
            else:
                if 200 <= response.status < 300:
                    return response
                status = response.status
                error_body = await self._error_body(response, deadline)
                retry_after = retry_after_seconds(response.headers)
                failure = http_status_error(self.label, status, error_body, retry_after)
                if status not in RETRYABLE_STATUSES:
                    raise ProviderError(failure)
            if attempt >= opts.max_retries:
                raise ProviderError(failure)
            if retry_after is not None and retry_after > opts.max_retry_after:
                log.warning("%s: upstream asks to retry after %.1fs (over max_retry_after); giving up",
                            self.label, retry_after)
                raise ProviderError(failure)
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            if deadline is not None and loop.time() + wait >= deadline:
                raise ProviderError(failure)
            attempt += 1
            if self.observers:
                self.observers.provider_retry(self.name, failure.code)
            # failure.message already names the provider and the upstream host.
            log.warning("%s; retry %d/%d in %.2fs", failure.message, attempt, opts.max_retries, wait)
            await asyncio.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped at backoff_max."""
        opts = self.options
        ceiling = min(opts.backoff_max, opts.backoff_initial * (2 ** attempt))
        return random.uniform(ceiling / 2, ceiling)

    async def _error_body(self, response: Http1Response, deadline: float | None) -> bytes:
        """Up to 64 KiB of an error answer's (decoded) body, then the response is closed."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(deadline):
                next_piece = _decoded(response)
                while (piece := await next_piece()) is not None:
                    chunks.append(piece)
                    size += len(piece)
                    if size >= MAX_ERROR_BODY:
                        break
        except (TimeoutError, ReadTimeout, UpstreamTransportError, OSError, zlib.error, UnsupportedEncoding):
            pass  # the status alone still says what happened
        finally:
            response.close()  # not read to its end: the connection is not reusable
        return b"".join(chunks)[:MAX_ERROR_BODY]

    # ------------------------------------------------------------------ reading

    async def _batches(self, response: Http1Response, decoder: ChunkDecoder,
                       deadline: float | None) -> AsyncIterator[list[RunEvent]]:
        """The answer's run events, a list per network read: one step of this generator per
        read rather than per token (a read of a fast upstream carries dozens)."""
        content_type = response.headers.get("content-type", "")
        if "json" in content_type and "event-stream" not in content_type:
            # The server ignored stream=true and answered with one whole completion.
            yield decoder.feed(await self._whole_json(response, deadline))
            return
        # Bytes in network-read batches, split into lines here: one await per read
        # rather than per line, and no text layer over the bytes.
        pieces = self._pieces(response)
        limit = self.options.max_event_bytes
        splitter = LineSplitter(limit)
        parser = SseParser(limit)
        while True:
            piece = await self._next_piece(pieces, decoder)
            plain = plain_data_events(piece, limit) if piece and splitter.idle and parser.idle else None
            if plain is not None:
                batch: list[RunEvent] = []
                done_at = -1
                try:
                    for index, data in enumerate(plain):
                        if data.strip() == b"[DONE]":
                            done_at = index
                            break
                        batch += self._decode("message", data, decoder)
                except ProviderError:
                    if batch:
                        yield batch  # what came before the bad chunk still reaches the run
                    raise
                if batch:
                    yield batch
                if done_at >= 0:
                    if not response.complete:
                        await self._drain(pieces, 2 * (len(plain) - done_at - 1))
                    return
                continue
            try:
                lines = splitter.flush() if piece is None else splitter.feed(piece)
            except SseLimitError as exc:
                raise self._over_limit(exc, decoder) from None
            if piece is None:
                lines.append("")  # the end of the body dispatches an unterminated last event
            for done_at, line in enumerate(lines):
                try:
                    sse = parser.feed(line)
                except SseLimitError as exc:
                    raise self._over_limit(exc, decoder) from None
                if sse is None:
                    continue
                data = sse.data.strip()
                if data == "[DONE]":
                    if piece is not None and not response.complete:
                        await self._drain(pieces, len(lines) - done_at - 1)
                    return
                events = self._decode(sse.event, data, decoder)
                if events:
                    yield events
            if piece is None:
                break
        if decoder.finish_reason is None:
            raise ProviderError(connection_error(
                self.label, f"the stream ended after {decoder.chunks} chunk(s) without a finish reason "
                "or [DONE]; the answer is incomplete",
            ))

    def _over_limit(self, exc: SseLimitError, decoder: ChunkDecoder) -> ProviderError:
        return ProviderError(bad_response(
            self.label, f"sent {exc.what} of its event stream longer than max_event_bytes = {exc.limit} bytes "
            f"after {decoder.chunks} chunk(s); raise max_event_bytes in this [providers] table if the "
            "upstream really sends such events",
        ))

    def _pieces(self, response: Http1Response) -> NextPiece:
        try:
            return _decoded(response)
        except UnsupportedEncoding as exc:
            raise ProviderError(bad_response(
                self.label, f"answered with Content-Encoding {exc} although only {ACCEPT_ENCODING} was offered",
            )) from None

    def _decode(self, event: str, data: str | bytes, decoder: ChunkDecoder) -> list[RunEvent]:
        """One SSE event's chunk as run events; a malformed or error chunk fails the run.

        ``data`` is text from the general parser, or raw bytes from the fast path (decoded
        here, as the parser would have: invalid UTF-8 becomes U+FFFD, not an error).
        """
        try:
            chunk: Any = loads(data)
        except ValueError as exc:
            if isinstance(data, bytes):
                return self._decode(event, data.decode("utf-8", "replace"), decoder)
            raise ProviderError(bad_response(
                self.label, f"sent a malformed stream chunk after {decoder.chunks} good chunk(s) (not JSON: {exc})",
            )) from None
        if event == "error" or (isinstance(chunk, dict) and chunk.get("error")):
            message, _, _ = upstream_error_detail(data.encode() if isinstance(data, str) else data)
            raise ProviderError(RunError(
                f"{self.label} reported an error mid-stream after {decoder.chunks} chunk(s): {message}",
                code="upstream_error", status=502,
            ))
        try:
            return decoder.feed(chunk)
        except UpstreamFormatError as exc:
            raise ProviderError(bad_response(self.label, f"sent an unusable stream chunk: {exc}")) from None

    async def _next_piece(self, pieces: NextPiece, decoder: ChunkDecoder) -> bytes | None:
        """The body's next bytes (``None`` at its end); transport faults become run errors."""
        try:
            return await pieces()  # total_timeout: the client raises DeadlineExceeded (a TimeoutError)
        except ReadTimeout:
            raise ProviderError(timeout_error(
                self.label, f"stream stalled: no data for read_timeout = {self.options.read_timeout:g}s "
                f"after {decoder.chunks} chunk(s)",
            )) from None
        except TimeoutError:
            raise ProviderError(self._total_timeout(f"streaming (after {decoder.chunks} chunk(s))")) from None
        except (UpstreamTransportError, OSError) as exc:
            raise ProviderError(connection_error(
                self.label, f"the connection dropped mid-stream after {decoder.chunks} chunk(s): "
                f"{describe_error(exc)}",
            )) from None
        except zlib.error:
            raise ProviderError(bad_response(
                self.label, f"sent a corrupt compressed stream after {decoder.chunks} chunk(s)",
            )) from None

    async def _drain(self, pieces: NextPiece, lines_left: int) -> None:
        """Read what little follows ``[DONE]`` (normally just the end of the body) so the
        connection goes back to the pool: reusing it saves a TCP (and TLS) handshake on
        the next request. A server that keeps talking (``lines_left`` lines already
        followed ``[DONE]`` in its last read) is cut off and closed instead."""
        splitter = LineSplitter(self.options.max_event_bytes)
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while lines_left < DRAIN_LINES:
                    piece = await pieces()
                    if piece is None:
                        return
                    lines_left += len(splitter.feed(piece))
        except (TimeoutError, ReadTimeout, UpstreamTransportError, OSError, zlib.error, SseLimitError):
            pass  # the response is closed by the caller either way

    async def _whole_json(self, response: Http1Response, deadline: float | None) -> Any:
        chunks: list[bytes] = []
        size = 0
        limit = self.options.max_response_bytes
        try:
            async with asyncio.timeout_at(deadline):
                next_piece = self._pieces(response)
                while (chunk := await next_piece()) is not None:
                    size += len(chunk)
                    if size > limit:
                        raise ProviderError(bad_response(
                            self.label, f"sent a whole completion over max_response_bytes = {limit} bytes; "
                            "raise max_response_bytes in this [providers] table if that is expected",
                        ))
                    chunks.append(chunk)
        except ReadTimeout:
            raise ProviderError(timeout_error(self.label, "stalled while sending the completion")) from None
        except TimeoutError:
            raise ProviderError(self._total_timeout("reading the completion")) from None
        except (UpstreamTransportError, OSError) as exc:
            raise ProviderError(connection_error(
                self.label, f"the connection dropped while sending the completion: {describe_error(exc)}",
            )) from None
        except zlib.error:
            raise ProviderError(bad_response(self.label, "sent a corrupt compressed completion")) from None
        try:
            return loads(b"".join(chunks))
        except ValueError as exc:
            raise ProviderError(bad_response(self.label, f"sent a completion that is not JSON ({exc})")) from None

    def _total_timeout(self, during: str) -> RunError:
        return timeout_error(self.label, f"total_timeout = {self.options.total_timeout:g}s exceeded while {during}")


def _decoded(response: Http1Response) -> NextPiece:
    """The body, decoded in bounded steps (see :mod:`plugins.openai_upstream.body`), as
    a function returning its next piece (``None`` at the end); raises
    :class:`UnsupportedEncoding` at once for an encoding we did not offer."""
    body = BodyDecoder(response.headers.get("content-encoding", ""))
    if body.identity:
        # The usual case: one await per network read, no decoding layer.
        return response.read
    # Pulled one step at a time: a small compressed read may expand a thousandfold.
    steps: Iterator[bytes] = iter(())

    async def next_piece() -> bytes | None:
        nonlocal steps
        while (piece := next(steps, None)) is None:
            raw = await response.read()
            if raw is None:
                return None
            steps = body.decode(raw)
        return piece

    return next_piece


def _finish(response: Http1Response) -> None:
    """Give the connection back to the pool when the body was read to its end (after
    [DONE] and the drain); close it otherwise, so the upstream sees the request end
    (a run cancelled, failed or cut off mid-stream)."""
    if response.complete:
        response.release()
    else:
        response.close()
