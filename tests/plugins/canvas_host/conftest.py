"""Fixtures for the canvas host tests: an app factory, the root, raw HTTP on a socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from quart import Quart

from kernel.testing import TEST_TOKEN

MOUNT = "/__kernel__/canvas"
BEARER = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture
def canvas_app(make_app: Callable[..., Quart]) -> Callable[..., Quart]:
    """``canvas_app(live_reload=False, ...)``: an app with the canvas host enabled."""

    def factory(config: dict[str, Any] | None = None, **options: Any) -> Quart:
        return make_app({**(config or {}), "plugins": {"canvas_host": {"enabled": True, **options}}})

    return factory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The default canvas root (``canvas/`` under the test's state dir), created."""
    path = tmp_path / "state" / "canvas"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(base: str, method: str, target: bytes, headers: dict[str, str] | None = None,
                body: bytes = b"") -> RawResponse:
    """Send ``target`` exactly as given (no client-side normalisation) and read the answer."""
    parts = urlsplit(base)
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {parts.netloc}".encode(), b"Connection: close"]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split(" ")[1]), found, payload)


async def open_raw(client: Any, method: str, raw: bytes, headers: dict[str, str] | None = None,
                   data: bytes | None = None) -> Any:
    """In-process request with an exact raw path, decoded the way Hypercorn decodes it."""
    path, _, query = raw.partition(b"?")
    scope = {"raw_path": path, "path": unquote(path.decode("ascii")), "query_string": query}
    return await client.open("/", method=method, headers=headers or {}, data=data, scope_base=scope)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def raw_http() -> Callable[..., RawResponse]:
    """:func:`raw_request` (test modules cannot import conftest under importlib mode)."""
    return raw_request


@pytest.fixture
def raw_open() -> Callable[..., Any]:
    """:func:`open_raw` as a fixture."""
    return open_raw


@pytest.fixture
def poll() -> Callable[..., None]:
    """:func:`wait_for` as a fixture."""
    return wait_for
