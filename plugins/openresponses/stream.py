"""Wiring a :class:`ResponseBuilder` to a run, following its events, and SSE encoding.

The builder is fed by a run *listener*, so the response advances with the run
whether or not anyone is reading: a stream, a non-streaming request and (later) a
stored-response reader all see the same events. :class:`EventFollower` replays a
builder's events after a given ``sequence_number`` and then follows live ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from plugins.openresponses.builder import TERMINAL_EVENTS, Event, ResponseBuilder

if TYPE_CHECKING:
    from kernel import RunEvent
    from kernel.runs import Run

log = logging.getLogger("plugins.openresponses")

DONE_CHUNK = b"data: [DONE]\n\n"


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON: orjson (7x faster than ``json.dumps`` per event), same bytes.

    orjson refuses what it cannot write exactly: a lone UTF-16 surrogate (an upstream's
    ``\\ud800`` escape, which UTF-8 cannot encode) or an integer beyond 64 bits. Those
    go through :mod:`json` with ``\\u`` escapes, so they still go out (as valid JSON)
    rather than failing mid-response.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":")).encode()


def encode_event(event: Event) -> bytes:
    """One SSE event as a single chunk: ``event: <type>``, ``data: <json>``, blank line; LF only.

    JSON escapes CR and LF inside strings, so the data is always one line.
    """
    return b"event: " + event["type"].encode() + b"\ndata: " + encode_json(event) + b"\n\n"


def drive(builder: ResponseBuilder, run: Run) -> None:
    """Feed ``builder`` every event ``run`` has recorded and every later one, as they happen."""
    for event in list(run.events_log):
        builder.feed(event)
    if builder.done:
        return
    # The registry keeps finished runs for a while; once the response is complete the
    # listener lets go of the builder so its events are not kept alive with the run.
    held: list[ResponseBuilder | None] = [builder]

    def listener(_run: Run, event: RunEvent) -> None:
        current = held[0]
        if current is not None:
            current.feed(event)
            if current.done:
                held[0] = None

    # Registered synchronously right after the replay: no event can fall in between.
    run.listeners.append(listener)


class EventFollower:
    """Async reader of one builder's events; any number of :meth:`follow` calls may run at once."""

    def __init__(self, builder: ResponseBuilder) -> None:
        self.builder = builder
        self._changed = asyncio.Event()
        if not builder.done:  # a done builder has all its events and lets go of listeners
            builder.listeners.append(lambda _event: self._changed.set())

    async def follow(self, after: int = -1) -> AsyncIterator[Event]:
        """Events with ``sequence_number > after``, then live ones, up to the terminal event."""
        async for batch in self.follow_batches(after):
            for event in batch:
                yield event

    async def follow_batches(self, after: int = -1) -> AsyncIterator[list[Event]]:
        """Like :meth:`follow`, but every event available at each wake-up as one list.

        An upstream read often carries dozens of tokens; handing them on together lets
        the writer send them with one pass through the HTTP stack instead of one each.
        """
        position = max(after + 1, 0)
        events = self.builder.events
        while True:
            if position < len(events):
                batch = events[position:]
                for index, event in enumerate(batch):
                    if event["type"] in TERMINAL_EVENTS:
                        yield batch[:index + 1]
                        return
                position += len(batch)
                yield batch
                continue
            if self.builder.done:
                return
            self._changed.clear()
            if position < len(events):
                continue
            await self._changed.wait()


async def sse_chunks(follower: EventFollower, after: int = -1,
                     before_done: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bytes]:
    """The SSE body: the events available at each wake-up as one piece, then ``data: [DONE]``.

    Each event is a complete ``event:``/``data:`` block; the server frames every block
    as its own HTTP chunk (kernel.connections), however many travel together here.
    ``before_done`` is awaited first (a store makes the response durable there, so a
    client that saw ``[DONE]`` can rely on reading it back).
    """
    async for batch in follower.follow_batches(after):
        yield b"".join([encode_event(event) for event in batch]) if len(batch) > 1 else encode_event(batch[0])
    if before_done is not None:
        try:
            await before_done()
        except Exception:
            # The client already has the terminal event; cutting the connection now would
            # only lose it the [DONE]. The failure is the server's to fix: log it.
            log.exception("response %s: could not be settled before [DONE]", follower.builder.id)
    yield DONE_CHUNK
