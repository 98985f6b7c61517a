"""Turn a request's raw path into safe path segments below the mount.

The ASGI server has already percent-decoded ``scope["path"]`` (leniently: broken
escapes stay as they are, invalid UTF-8 becomes U+FFFD), which hides exactly what a
traversal check needs to see. So the canvas host parses ``scope["raw_path"]`` itself:
split on ``/`` first (an encoded ``%2F`` stays inside its segment), then decode each
segment strictly. Anything malformed is a 400; anything that could name a place other
than the obvious one (dot segments, empty segments, slashes or backslashes inside a
segment, hidden names) is a 404, before the file system is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

# Longest name most file systems accept; longer ones are rejected before any syscall.
MAX_SEGMENT_BYTES = 255
# Longest path below the root. Far beyond any real page, and it keeps writes from
# building directory trees too deep for ordinary tools (PATH_MAX is 4096).
MAX_PATH_BYTES = 1024

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# An absolute-form request target (``GET http://host/path``), as proxies send.
_ABSOLUTE_FORM = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")


class PathRejected(Exception):
    """The request path is unusable: ``status`` is 400 (malformed) or 404 (not servable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CanvasPath:
    """Decoded segments below the mount, and whether the URL ended with a slash."""

    segments: tuple[str, ...]
    trailing_slash: bool

    @property
    def display(self) -> str:
        """The relative path for messages (``a/b.html``)."""
        return "/".join(self.segments)


def raw_path_of(scope: dict) -> bytes:
    """The undecoded request path; re-encoded from ``path`` when the server gave none."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes | bytearray) and raw:
        path = bytes(raw.partition(b"?")[0])
        form = _ABSOLUTE_FORM.match(path)
        return path[form.end():] if form else path
    return quote(scope.get("path", ""), safe="/").encode("ascii")


def decode_segment(raw: bytes) -> str:
    """Percent-decode one segment strictly: 400 for a broken escape, bad UTF-8 or NUL."""
    if _BAD_ESCAPE.search(raw):
        raise PathRejected(400, "the path has a malformed percent-escape")
    data = unquote_to_bytes(raw)
    try:
        # Strict UTF-8 also refuses overlong forms (%C0%AE) and surrogates.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PathRejected(400, "the path is not valid UTF-8 once percent-decoded") from None
    if "\x00" in text:
        raise PathRejected(400, "the path contains a NUL byte")
    return text


def split_path(raw_path: bytes, prefix: tuple[str, ...]) -> CanvasPath:
    """Decode ``raw_path`` and return what lies below ``prefix`` (the mount's segments).

    Raises :class:`PathRejected`. Every segment is decoded first so that malformed
    input is a 400 wherever it appears.
    """
    parts = raw_path.split(b"/")
    if parts[0] != b"":
        raise PathRejected(404, "the path is not absolute")
    decoded = [decode_segment(p) for p in parts[1:]]
    if tuple(decoded[: len(prefix)]) != prefix:
        raise PathRejected(404, "the path is not below the canvas mount")
    rest = decoded[len(prefix):]
    if not rest:
        return CanvasPath((), trailing_slash=False)
    trailing = rest[-1] == ""
    segments = rest[:-1] if trailing else rest
    for seg in segments:
        check_segment(seg)
    if sum(len(seg.encode("utf-8")) + 1 for seg in segments) > MAX_PATH_BYTES + 1:
        raise PathRejected(404, f"the path is longer than {MAX_PATH_BYTES} bytes")
    return CanvasPath(tuple(segments), trailing_slash=trailing)


def check_segment(seg: str) -> None:
    """404 for a segment that is empty, a dot segment, hidden, or hides a separator."""
    if seg == "":
        raise PathRejected(404, "the path has an empty segment ('//')")
    if seg in (".", ".."):
        raise PathRejected(404, "the path has a '.' or '..' segment")
    if seg.startswith("."):
        raise PathRejected(404, "hidden names (starting with '.') are not served")
    if "/" in seg or "\\" in seg:
        raise PathRejected(404, "the path has an encoded slash or a backslash")
    if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise PathRejected(404, "a path segment is too long")
