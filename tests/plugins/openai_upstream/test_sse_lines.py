"""Upstream event streams split into lines at \\n, \\r\\n and \\r only, across any read boundaries."""

from __future__ import annotations

import json
import random

from plugins.openai_upstream.sse import LineSplitter


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
