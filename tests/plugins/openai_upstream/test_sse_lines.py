"""Upstream event streams split into lines at \\n, \\r\\n and \\r only, across any read boundaries."""

from __future__ import annotations

import json
import random

import pytest

from plugins.openai_upstream.sse import LineSplitter, SseLimitError, SseParser, plain_data_events


def split_all(pieces: list[bytes]) -> list[str]:
    splitter = LineSplitter()
    lines: list[str] = []
    for piece in pieces:
        lines.extend(splitter.feed(piece))
    return lines + splitter.flush()


def test_unicode_line_separators_inside_json_do_not_end_a_line():
    # U+2028/U+2029/U+0085 are legal unescaped in JSON strings; str.splitlines would cut there.
    text = "one\u2028two\u2029three\u0085four"
    data = json.dumps({"choices": [{"delta": {"content": text}}]}, ensure_ascii=False)
    lines = split_all([f"data: {data}\n\n".encode()])
    assert lines == [f"data: {data}", ""]
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["content"] == text


def test_any_read_boundaries_give_the_same_lines():
    body = "data: héllo ✓\r\n\r\ndata: a\rdata: b\n\ndata: \u2028x\n: ping\n\nlast".encode()
    expected = ["data: héllo ✓", "", "data: a", "data: b", "", "data: \u2028x", ": ping", "", "last"]
    assert split_all([body]) == expected
    rng = random.Random(7)
    for _ in range(2000):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 8)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert split_all(pieces) == expected, pieces


# --------------------------------------------------------------------------- limits


def test_an_endless_line_never_holds_more_than_the_cap():
    cap = 64 * 1024
    splitter = LineSplitter(cap)
    held: list[int] = []
    with pytest.raises(SseLimitError) as info:
        for _ in range(10_000):  # 640 MiB if nothing stopped it
            splitter.feed(b"x" * 4096)
            held.append(splitter.held)
    assert max(held) <= cap and len(held) == cap // 4096  # the next piece was refused, not held
    assert (info.value.what, info.value.limit) == ("a line", cap)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_a_line_of_exactly_the_cap_passes_one_byte_more_fails(line_end):
    cap = 1024
    assert split_all_capped([b"a" * cap + line_end], cap) == ["a" * cap]
    # The same across read boundaries, with the line already held.
    assert split_all_capped([b"a" * 1000, b"a" * 24 + line_end + b"b"], cap) == ["a" * cap, "b"]
    with pytest.raises(SseLimitError):
        split_all_capped([b"a" * (cap + 1) + line_end], cap)  # a whole long line inside one read
    with pytest.raises(SseLimitError):
        split_all_capped([b"a" * 1000, b"a" * 25 + line_end], cap)


def test_an_event_of_many_short_data_lines_is_capped():
    parser = SseParser(max_event=1000)
    with pytest.raises(SseLimitError) as info:
        for _ in range(10_000):
            assert parser.feed("data: " + "y" * 99) is None  # no blank line ever dispatches
    assert info.value.what == "an event"
    # Dispatching resets the count: many events of fair size pass.
    parser = SseParser(max_event=1000)
    for _ in range(100):
        parser.feed("data: " + "y" * 900)
        assert parser.feed("") is not None


def split_all_capped(pieces: list[bytes], cap: int) -> list[str]:
    splitter = LineSplitter(cap)
    lines: list[str] = []
    for piece in pieces:
        lines.extend(splitter.feed(piece))
    return lines + splitter.flush()


def general_events(piece: bytes, limit: int = 1 << 20) -> list[tuple[str, str]]:
    """(event, data) pairs the line splitter and the parser give for one whole piece."""
    splitter, parser = LineSplitter(limit), SseParser(limit)
    found = []
    for line in splitter.feed(piece):
        event = parser.feed(line)
        if event is not None:
            found.append((event.event, event.data))
    return found


@pytest.mark.parametrize("piece", [
    b'data: {"a":1}\n\n',
    b'data: {"a":1}\n\ndata: {"b":"x y"}\n\ndata: [DONE]\n\n',
    b"data:  leading space kept\n\n",
    b"data: \n\n",
    "data: {\"t\":\"caf\u00e9 \u2028\"}\n\n".encode(),
])
def test_the_plain_fast_path_gives_what_the_parser_gives(piece):
    plain = plain_data_events(piece, 1 << 20)
    assert plain is not None
    assert [("message", data.decode()) for data in plain] == general_events(piece)


@pytest.mark.parametrize("piece", [
    b"data: cut in the mid",  # an event cut by the read
    b"data: 1\n\ndata: 2",
    b"event: error\ndata: {}\n\n",  # a named event
    b": ping\n\ndata: 1\n\n",  # a comment
    b"data: 1\r\n\r\n",  # CR line ends
    b"data: a\ndata: b\n\n",  # two data lines
    b"data:nospace\n\n",  # the parser would give the same, but the fast path stays strict
    b"id: 7\ndata: 1\n\n",
    b"",
])
def test_anything_else_goes_to_the_general_parser(piece):
    assert plain_data_events(piece, 1 << 20) is None


def test_the_fast_path_leaves_an_event_over_the_cap_to_the_parser():
    piece = b"data: " + b"x" * 100 + b"\n\n"
    assert plain_data_events(piece, 106) is not None
    assert plain_data_events(piece, 105) is None
    with pytest.raises(SseLimitError):
        general_events(piece, 105)


def test_idle_means_between_events():
    splitter, parser = LineSplitter(), SseParser()
    assert splitter.idle and parser.idle
    splitter.feed(b"data: par")
    assert not splitter.idle
    for line in splitter.feed(b"tial\n"):
        parser.feed(line)
    assert splitter.idle and not parser.idle
    for line in splitter.feed(b"\n"):
        parser.feed(line)
    assert splitter.idle and parser.idle
    splitter.feed(b"data: 1\r")  # a CR may pair with the next piece's LF
    assert not splitter.idle
