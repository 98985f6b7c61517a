"""A scriptable fake OpenAI-compatible server on a free loopback port, for tests.

It is a raw asyncio server (h11 parses the HTTP/1.1) running in its own thread, so
sync tests, async tests and a gateway served in another thread can all talk to it.
It records every request and streams real SSE chunks; each test scripts the replies::

    with FakeOpenAI() as fake:
        fake.script(stream_reply(text_chunks("Hello", " world")), error_reply(500, "boom"))
        ...  # point a provider at fake.base_url
        assert fake.requests[0].json["stream"] is True

Replies are consumed one per ``POST /v1/chat/completions``, in order; when the script
is empty the ``default`` reply is used (or a 500 that says the script ran out).
``GET /v1/models`` lists ``fake-model``. A reply can stream slowly (``delay``), stop
in the middle and drop the connection (``end="drop"``), stall (``end="hang"``), or
never answer at all (:func:`hang_reply`), or close the connection without answering
(:func:`reset_reply`), send one line that never ends (:func:`endless_line_reply`), or
gzip its body (:func:`gzipped`, which also makes decompression bombs).
``RecordedRequest.disconnected`` is set
when the client goes away before its reply was complete, which is how tests prove
that cancellation closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import h11

MODEL = "fake-model"

# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """What the fake sends for one request.

    ``pieces`` are written one by one (each an HTTP chunk), ``delay`` seconds apart;
    ``end`` says what happens after the last piece: ``complete`` ends the body,
    ``drop`` aborts the TCP connection without ending it, ``hang`` keeps it open and
    silent until the client leaves. ``hang_before_headers`` never sends a response;
    ``reset_before_headers`` aborts the connection as soon as the request is read.
    ``forever``, when set, is written again and again after ``pieces`` until the
    client leaves (an endless body).
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    end: Literal["complete", "drop", "hang"] = "complete"
    hang_before_headers: bool = False
    reset_before_headers: bool = False
    forever: bytes | None = None


def sse_bytes(event: dict[str, Any] | str | bytes) -> bytes:
    """One SSE event: a dict becomes ``data: <json>``, a str is sent as the data
    verbatim (malformed JSON included), bytes are sent raw."""
    if isinstance(event, bytes):
        return event
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


def stream_reply(chunks: Iterable[dict[str, Any] | str | bytes], *, done: bool = True, delay: float = 0.0,
                 end: Literal["complete", "drop", "hang"] = "complete",
                 headers: dict[str, str] | None = None) -> Reply:
    """An SSE stream of ``chunks``, followed by ``data: [DONE]`` when ``done``."""
    pieces = [sse_bytes(c) for c in chunks]
    if done and end == "complete":
        pieces.append(b"data: [DONE]\n\n")
    return Reply(headers={"content-type": "text/event-stream", "cache-control": "no-cache", **(headers or {})},
                 pieces=pieces, delay=delay, end=end)


def error_reply(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, retry_after: float | str | None = None,
                headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style error body with ``status`` (and ``Retry-After`` if given: a number,
    or a string sent verbatim such as ``inf``, ``garbage`` or an HTTP date)."""
    extra = dict(headers or {})
    if isinstance(retry_after, str):
        extra["retry-after"] = retry_after
    elif retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return json_reply(body, status=status, headers=extra)


def json_reply(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """A plain JSON answer (a non-streaming completion, an error ...)."""
    return Reply(status=status, headers={"content-type": "application/json", **(headers or {})},
                 pieces=[json.dumps(body).encode()])


def endless_line_reply(first: Iterable[dict[str, Any] | str | bytes] = (), *, piece_bytes: int = 64 * 1024,
                       headers: dict[str, str] | None = None) -> Reply:
    """An event stream whose ``first`` events are followed by ``data: xxxx...`` that never
    ends: no line end ever comes, ``piece_bytes`` more bytes per write, until the client leaves."""
    reply = stream_reply(first, done=False, headers=headers)
    reply.pieces.append(b"data: ")
    reply.forever = b"x" * piece_bytes
    return reply


def gzipped(reply: Reply) -> Reply:
    """``reply`` with its body gzip-encoded (``Content-Encoding: gzip``), piece by piece
    (each piece flushed, so a stream still arrives in its pieces)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pieces = [z.compress(p) + z.flush(zlib.Z_SYNC_FLUSH) for p in reply.pieces]
    pieces[-1:] = [(pieces[-1] if pieces else b"") + z.flush()]
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
    return Reply(status=reply.status, headers={**headers, "content-encoding": "gzip"}, pieces=pieces,
                 delay=reply.delay, end=reply.end)


def hang_reply() -> Reply:
    """Accept the request and never answer."""
    return Reply(hang_before_headers=True)


def reset_reply() -> Reply:
    """Read the request, then abort the connection without a response (a crashed or
    restarting server: the client sees a connection error before any byte)."""
    return Reply(reset_before_headers=True)


# --------------------------------------------------------------------------- chunks


def chunk(delta: dict[str, Any] | None = None, *, finish_reason: str | None = None,
          usage: dict[str, Any] | None = None, model: str = MODEL) -> dict[str, Any]:
    """One ``chat.completion.chunk``; with neither delta nor finish reason it has no
    choices (the shape of the final usage chunk)."""
    out: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                           "model": model, "system_fingerprint": None, "choices": []}
    if delta is not None or finish_reason is not None:
        out["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
    out["usage"] = usage
    return out


def usage(prompt: int, completion: int, *, reasoning: int = 0, cached: int = 0,
          cache_write: int | None = None) -> dict[str, Any]:
    """A Chat Completions usage object (``cache_write`` adds ``cache_write_tokens``)."""
    prompt_details: dict[str, int] = {"cached_tokens": cached}
    if cache_write is not None:
        prompt_details["cache_write_tokens"] = cache_write
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def text_chunks(*pieces: str, finish_reason: str = "stop", reasoning: Iterable[str] = (),
                reasoning_field: str = "reasoning_content",
                usage_: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A role chunk, reasoning pieces, text pieces, the finish chunk, then usage."""
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({reasoning_field: r}) for r in reasoning]
    out += [chunk({"content": p}) for p in pieces]
    out.append(chunk({}, finish_reason=finish_reason))
    if usage_ is not None:
        out.append(chunk(usage=usage_))
    return out


def tool_call_chunks(calls: list[tuple[str, str, str]], *, pieces: int = 3, text: str | None = None,
                     finish_reason: str = "tool_calls",
                     usage_: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Parallel tool calls ``(call_id, name, arguments_json)`` the way OpenAI streams
    them: a first piece per call with index, id and name, then argument fragments,
    interleaved between calls."""
    out = [chunk({"role": "assistant", "content": None})]
    if text:
        out.append(chunk({"content": text}))
    fragments: list[list[str]] = []
    for index, (call_id, name, args) in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}))
        size = max(1, -(-len(args) // pieces))
        fragments.append([args[i:i + size] for i in range(0, len(args), size)])
    for round_ in range(max((len(f) for f in fragments), default=0)):
        for index, parts in enumerate(fragments):
            if round_ < len(parts):
                out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": parts[round_]}}]}))
    out.append(chunk({}, finish_reason=finish_reason))
    if usage_ is not None:
        out.append(chunk(usage=usage_))
    return out


def completion(content: str | None = None, *, tool_calls: list[tuple[str, str, str]] | None = None,
               reasoning: str | None = None, finish_reason: str = "stop",
               usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    """A whole non-streaming ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                                 for cid, n, a in tool_calls]
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage_}


# --------------------------------------------------------------------------- the server


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The client's (host, port): equal ports mean the client reused its connection.
    peer: tuple[str, int] = ("", 0)
    received_at: float = field(default_factory=time.monotonic)
    # Set when the client closed the connection before its reply was complete.
    disconnected: threading.Event = field(default_factory=threading.Event)
    # Set when the whole reply was written.
    completed: threading.Event = field(default_factory=threading.Event)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeOpenAI:
    """The fake server. Use as a context manager; see the module docstring."""

    def __init__(self, *, default: Reply | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.default = default
        # Serve HTTPS with this (server-side) context, e.g. a trustme certificate for 127.0.0.1.
        self.ssl_context = ssl_context
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    # ------------------------------------------------------------------ test API

    @property
    def base_url(self) -> str:
        """The ``base_url`` to configure a provider with (ends in ``/v1``)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> FakeOpenAI:
        """Queue replies for the next chat-completions requests, in order."""
        with self._lock:
            self._script.extend(replies)
        return self

    def reset(self) -> None:
        """Forget the recorded requests and any replies still scripted (between tests
        that share one server)."""
        with self._lock:
            self._script.clear()
        self.requests.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/chat/completions`` requests so far."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` chat requests arrived; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.chat_requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fake upstream got {len(self.chat_requests)} request(s), expected {count}")
            time.sleep(0.005)
        return self.chat_requests

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server, abort open connections and join the thread."""
        if self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ server loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        # A deep listen queue: benchmarks open a thousand upstream connections at once, and
        # asyncio's default of 100 would overflow here (counted system-wide with the gateway's).
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context, backlog=2048)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            received = await self._read_request(conn, reader)
            if received is None:
                return
            received.peer = writer.get_extra_info("peername")[:2]
            self.requests.append(received)
            reply = self._reply_for(received)
            if not await self._send_watching(conn, reader, writer, reply, received):
                return  # client left, or the reply dropped the connection
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> RecordedRequest | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                return RecordedRequest(request.method.decode(), request.target.decode(), headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    def _reply_for(self, req: RecordedRequest) -> Reply:
        if req.method == "GET" and req.path.endswith("/models"):
            return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                           "owned_by": "fake"}]})
        if not (req.method == "POST" and req.path.endswith("/chat/completions")):
            return error_reply(404, f"fake upstream: no route for {req.method} {req.path}", code="not_found")
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.default is not None:
            return self.default
        return error_reply(500, "fake upstream: the test scripted no reply for this request", type="server_error")

    async def _send_watching(self, conn: h11.Connection, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter, reply: Reply, req: RecordedRequest) -> bool:
        """Send ``reply`` while watching for the client to close; True to keep the connection."""
        sender = asyncio.ensure_future(self._send(conn, writer, reply))
        try:
            while True:
                watcher = asyncio.ensure_future(reader.read(65536))
                done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    data = watcher.result()
                    if not data:  # EOF: the client went away
                        if not sender.done():
                            req.disconnected.set()
                        return False
                    conn.receive_data(data)  # a pipelined next request; h11 buffers it
                    if sender not in done:
                        continue
                else:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                keep = sender.result()
                if keep:
                    req.completed.set()
                return keep
        except ConnectionError:
            req.disconnected.set()
            return False
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender
            elif not sender.cancelled():
                sender.exception()  # a write that failed because the client left: seen, not an error

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        if reply.hang_before_headers:
            await asyncio.Event().wait()  # until the client leaves or the server stops
        if reply.reset_before_headers:
            writer.transport.abort()
            return False
        headers = list(reply.headers.items())
        if reply.end == "complete" and len(reply.pieces) == 1:
            headers.append(("content-length", str(len(reply.pieces[0]))))
        # Without a content-length h11 sends the body chunked, as streaming servers do.
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        await writer.drain()
        for piece in reply.pieces:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            writer.write(conn.send(h11.Data(data=piece)))
            await writer.drain()
        while reply.forever is not None:  # until the client leaves (drain raises) or the server stops
            writer.write(conn.send(h11.Data(data=reply.forever)))
            await writer.drain()
        if reply.end == "drop":
            writer.transport.abort()
            return False
        if reply.end == "hang":
            await asyncio.Event().wait()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True
