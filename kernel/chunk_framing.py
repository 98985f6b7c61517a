"""HTTP/1.1 body framing for streamed answers: one chunk per server-sent event, cheaply.

Endpoint plugins hand the server every SSE event a wake-up produced as one body
message (an upstream read often carries dozens of tokens). Hypercorn would frame such
a message as one HTTP chunk, and framing each event through h11 on its own (an
``h11.Data`` event, h11's state machine, one send each) was a third of a streamed
token's CPU. :class:`GatewayH11Protocol` frames chunked bodies itself: each complete
``text/event-stream`` event block (ending in a blank line) becomes its own chunk, as a
client reading chunk by chunk has always seen, and the whole message leaves in one
write. Other chunked bodies are framed as one chunk, exactly as h11 would.

h11's state machine does not change on body data (``SEND_BODY`` stays ``SEND_BODY``),
so framing the data here and still letting h11 send the head and the final empty chunk
puts the same bytes on the wire. Any body h11 would not frame with chunked encoding
(``Content-Length``, HTTP/1.0 close-delimited) goes through h11 unchanged.
"""

from __future__ import annotations

from typing import Any

import h11
from h11._writers import ChunkedWriter  # the one writer whose framing is reproduced here
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, Response
from hypercorn.protocol.h11 import H11Protocol

EVENT_END = b"\n\n"


def frame_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (non-empty data: an empty chunk ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def frame_events(data: bytes) -> bytes:
    """Every complete SSE event block of ``data`` as its own chunk; a partial tail as one more."""
    blocks = data.split(EVENT_END)
    tail = blocks.pop()
    framed = [b"%x\r\n%b\n\n\r\n" % (len(block) + 2, block) for block in blocks]
    if tail:
        framed.append(frame_chunk(tail))
    return b"".join(framed)


def is_event_stream(headers: Any) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


class GatewayH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, framing chunked response bodies itself (see the module)."""

    _event_stream = False

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, Body) and event.data and self._frames_chunks():
            data = event.data
            await self.send(RawData(data=frame_events(data) if self._event_stream else frame_chunk(data)))
            return
        if isinstance(event, Response) and event.status_code >= 200:
            self._event_stream = is_event_stream(event.headers)
        await super().stream_send(event)

    def _frames_chunks(self) -> bool:
        connection = self.connection
        return connection.our_state is h11.SEND_BODY and type(getattr(connection, "_writer", None)) is ChunkedWriter
