"""JSON for the upstream path: orjson where it is exact, the standard library otherwise.

orjson decodes a stream chunk and encodes a request body several times faster than
:mod:`json`, but it is stricter: it refuses integers beyond 64 bits, ``NaN`` and
lone surrogates, which :mod:`json` accepts (an upstream sending ``"prompt_tokens":
10**30`` must still be readable; the decoder bounds the number afterwards). Those
rare inputs fall back to :mod:`json`, so what is accepted, and the errors a truly
malformed chunk gets (``json``'s message, with line and column), are unchanged.

Request bodies are compact UTF-8 (orjson's form) rather than ``json.dumps``'
``", "``-separated ASCII: the same JSON value, fewer bytes (a float ``NaN`` or
``inf``, which only ``extra_body`` could hold, becomes ``null`` instead of the
invalid ``NaN``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    """``json.loads``' result for ``data``; raises ``ValueError`` (json's) when invalid."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes (UTF-8)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a >64-bit int, a lone surrogate, a non-str key
        return json.dumps(value).encode()
