"""Reading a request body as JSON, refusing what would only fail later as a 500.

``kernel.http.read_json`` answers 413/415 and malformed JSON. Three kinds of
syntactically valid JSON still broke requests deeper down, so they are a 400 here:
nesting too deep for Python's parser (``RecursionError``), integers longer than
Python converts (``ValueError``), and ``\\ud800``-style lone surrogates, which
parse into strings no UTF-8 encoder (the response body, SQLite) can write.
"""

from __future__ import annotations

from typing import Any

from kernel import ApiError
from kernel.http import read_json


async def read_body_json(max_bytes: int) -> dict[str, Any]:
    """The request's JSON object; 400 for bodies that are JSON but not usable."""
    try:
        data = await read_json(max_bytes)
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply to parse", code="invalid_json") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ApiError(400, f"request body is not usable JSON: {exc}", code="invalid_json") from None
    bad = lone_surrogate_path(data)
    if bad is not None:
        raise ApiError(400, f"invalid value for '{bad or 'body'}': the string contains a lone UTF-16 "
                       "surrogate escape (e.g. \\ud800 without its pair), which is not valid Unicode",
                       param=bad or None, code="invalid_value")
    return data


def lone_surrogate_path(data: Any) -> str | None:
    """The field path of a string holding a lone surrogate (or of the object whose key does), else None.

    Iterative, and ASCII strings (nearly all) are skipped by ``str.isascii``, a C scan,
    so a large inline file costs little.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and not _encodable(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and not _encodable(key):
                    return path  # the key itself cannot be shown: name the object holding it
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
