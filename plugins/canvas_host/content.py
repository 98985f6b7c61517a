"""What a served file looks like on the wire: MIME type, ETag, and the live-reload script."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re

# Explicit types for what canvas pages use, so the answer does not depend on the
# host's /etc/mime.types (which maps .js to application/javascript on some systems).
_TYPES: dict[str, str] = {
    ".html": "text/html", ".htm": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json", ".svg": "image/svg+xml", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".avif": "image/avif", ".ico": "image/x-icon", ".bmp": "image/bmp", ".wasm": "application/wasm",
    ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv", ".xml": "application/xml",
    ".pdf": "application/pdf", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".otf": "font/otf", ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg",
    ".mp4": "video/mp4", ".webm": "video/webm", ".glb": "model/gltf-binary", ".gltf": "model/gltf+json",
}
_CHARSET_TYPES = {"application/json", "application/xml", "image/svg+xml", "application/manifest+json"}
DEFAULT_TYPE = "application/octet-stream"

_BODY_CLOSE = re.compile(rb"</body\s*>", re.IGNORECASE)


def content_type(name: str) -> str:
    """The Content-Type for a file name; text types say ``charset=utf-8``."""
    ext = os.path.splitext(name)[1].lower()
    mime = _TYPES.get(ext) or mimetypes.guess_type(name, strict=False)[0] or DEFAULT_TYPE
    if mime.startswith("text/") or mime in _CHARSET_TYPES:
        return f"{mime}; charset=utf-8"
    return mime


def is_html(ctype: str) -> bool:
    return ctype.split(";", 1)[0] == "text/html"


def etag_for_bytes(body: bytes) -> str:
    """A strong ETag from the exact bytes served."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_for_stat(st: os.stat_result) -> str:
    """A strong ETag for a large file served without reading it first.

    Writes through the canvas API replace the inode, and in-place edits move size,
    mtime or ctime, so any change gives a new tag.
    """
    key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode()
    return '"s' + hashlib.blake2b(key, digest_size=16).hexdigest() + '"'


def none_match(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match`` lists ``etag`` (weak comparison, as RFC 9110 asks) or ``*``."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def reload_script(mount: str) -> bytes:
    """The snippet injected into HTML: reload on ``reload``; reconnect with backoff.

    After the socket comes back (the gateway restarted), the page reloads once, since
    files may have changed while nobody was listening.
    """
    ws_path = json.dumps(mount + "/ws")
    return (
        "<script>/* canvas live reload */(()=>{"
        f"const path={ws_path};let delay=250,lost=false;"
        "function connect(){"
        "const ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+path);"
        "ws.onopen=()=>{delay=250;if(lost)location.reload();};"
        "ws.onmessage=(e)=>{if(e.data==='reload')location.reload();};"
        "ws.onclose=()=>{lost=true;setTimeout(connect,delay);delay=Math.min(delay*2,5000);};"
        "}"
        "connect();})();</script>"
    ).encode()


def inject(html: bytes, script: bytes) -> bytes:
    """Insert ``script`` before the last ``</body>`` (any case), or append it."""
    matches = list(_BODY_CLOSE.finditer(html))
    if not matches:
        return html + script
    at = matches[-1].start()
    return html[:at] + script + html[at:]
