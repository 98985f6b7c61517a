"""HTTP/1.1 framing of streamed bodies: every SSE event its own chunk, read back with h11.

The endpoint plugins hand the server several events in one body message; the bytes on
the wire must still be one HTTP chunk per event, exactly as h11 would frame them one by one.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import h11
import pytest
from testsupport.spec import assert_valid_event

from kernel.chunk_framing import frame_chunk, frame_events, is_event_stream
from kernel.testing import TEST_TOKEN


def chunks_of(framed: bytes) -> list[bytes]:
    """The chunks h11 (as a client) reads from a chunked body ``framed``."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n")
    return read_chunks(client)


def read_chunks(client: h11.Connection) -> list[bytes]:
    chunks: list[bytes] = []
    current = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            raise AssertionError("the body ended early")
        if isinstance(event, h11.Data):
            current = (b"" if event.chunk_start else current) + bytes(event.data)
            if event.chunk_end:
                chunks.append(current)
        if isinstance(event, h11.EndOfMessage):
            return chunks


def test_frame_chunk_is_what_h11_writes():
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_event()
    server.send(h11.Response(status_code=200, headers=[]))
    for data in (b"x", b"hello\n\n" * 40, bytes(range(256)) * 300):
        assert frame_chunk(data) == server.send(h11.Data(data=data))


def test_every_event_block_is_its_own_chunk():
    events = [b"event: a\ndata: {\"n\":1}\n\n", b"data: two\n\n", b": ping\n\n", b"data: [DONE]\n\n"]
    assert chunks_of(frame_events(b"".join(events))) == events
    # A piece cut inside an event: its complete events, then the partial tail as one chunk.
    assert chunks_of(frame_events(b"data: 1\n\ndata: 2")) == [b"data: 1\n\n", b"data: 2"]
    assert chunks_of(frame_events(b"data: only")) == [b"data: only"]


@pytest.mark.parametrize(("value", "expected"), [
    (b"text/event-stream", True), (b"text/event-stream; charset=utf-8", True), (b"Text/Event-Stream", True),
    (b"application/json", False), (b"text/event-streamx", False),
])
def test_event_stream_is_recognised_by_content_type(value, expected):
    assert is_event_stream([(b"content-type", value)]) is expected
    assert is_event_stream([(b"x-other", b"text/event-stream")]) is False


def raw_post(base: str, path: str, body: dict[str, Any]) -> tuple[h11.Response, list[bytes], bytes]:
    """POST over a raw socket: the response head, the body's HTTP chunks as h11 reads them
    (none for a body that is not chunked) and the whole body."""
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    payload = json.dumps(body).encode()
    client = h11.Connection(h11.CLIENT)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(client.send(h11.Request(method="POST", target=path, headers=[
            ("Host", "gateway"), ("Authorization", f"Bearer {TEST_TOKEN}"),
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])) + payload)
        head: h11.Response | None = None
        chunks: list[bytes] = []
        current = whole = b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                whole += bytes(event.data)
                current = (b"" if event.chunk_start else current) + bytes(event.data)
                if event.chunk_end:
                    chunks.append(current)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, chunks, whole


WORDS = " ".join(f"w{i}" for i in range(300))


@pytest.fixture
def base(make_app, live_server):
    app = make_app({"plugins": {"openresponses": {"enabled": True}, "chat_completions": {"enabled": True}},
                    "agents": {"main": {"provider": "echo"}}})
    with live_server(app) as url:
        yield url


def test_a_responses_stream_is_one_chunk_per_event_on_the_wire(base):
    head, chunks, _ = raw_post(base, "/v1/responses", {"model": "agent:main", "input": WORDS, "stream": True})
    assert head.status_code == 200
    assert all(chunk.startswith(b"event: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n\n") == 1
               for chunk in chunks[:-1])
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [json.loads(chunk.split(b"\ndata: ", 1)[1]) for chunk in chunks[:-1]]
    for event in events:
        assert_valid_event(event)  # the published spec's stream event shapes
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == WORDS and len(deltas) == 300
    assert events[-1]["type"] == "response.completed"


def test_a_chat_stream_is_one_chunk_per_event_on_the_wire(base):
    head, chunks, _ = raw_post(base, "/v1/chat/completions", {
        "model": "agent:main", "messages": [{"role": "user", "content": WORDS}], "stream": True})
    assert head.status_code == 200
    assert all(chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n\n") == 1
               for chunk in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    pieces = [json.loads(chunk[6:])["choices"][0]["delta"].get("content") or "" for chunk in chunks[:-1]]
    assert "".join(pieces) == WORDS


def test_a_json_answer_keeps_its_content_length(base):
    head, chunks, body = raw_post(base, "/v1/responses", {"model": "agent:main", "input": "hi"})
    assert head.status_code == 200
    headers = dict(head.headers)
    assert int(headers[b"content-length"]) == len(body) and b"transfer-encoding" not in headers
    assert chunks == [] and json.loads(body)["status"] == "completed"


def test_an_http_1_0_client_gets_the_stream_close_delimited(base):
    """No chunked encoding for HTTP/1.0: the body goes through h11's own writer, whole."""
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    payload = json.dumps({"model": "agent:main", "input": WORDS, "stream": True}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.0\r\nHost: gateway\r\nAuthorization: Bearer " + TEST_TOKEN.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(payload)).encode()
                     + b"\r\n\r\n" + payload)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert body.endswith(b"data: [DONE]\n\n")
    blocks = body.split(b"\n\n")[:-2]
    events = [json.loads(block.split(b"\ndata: ", 1)[1]) for block in blocks]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == WORDS


def test_any_body_survives_the_framing_byte_for_byte():
    """Whatever a plugin sends (partial events, CR line ends, runs of blank lines): the
    chunks carry exactly its bytes, and none is empty (an empty chunk would end the body)."""
    import random

    rng = random.Random(7)
    alphabet = [b"\n", b"\r", b"data: ", b"x", b"\n\n", b": ping", b"{}"]
    for _ in range(500):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        chunks = chunks_of(frame_events(data))
        assert b"".join(chunks) == data and all(chunks)
