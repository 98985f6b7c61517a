"""PUT and DELETE under ``{mount}/files/``: bearer only, size limit, atomic replace, path rules."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from quart import Quart

from kernel.testing import AUTH_HEADERS, TEST_TOKEN

MOUNT = "/__kernel__/canvas"


async def test_put_creates_replaces_and_serves(canvas_app: Callable[..., Quart], root: Path) -> None:
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        resp = await client.put(f"{MOUNT}/files/deep/er/page%20one.html", data=b"<body>one</body>",
                                headers=AUTH_HEADERS)
        assert resp.status_code == 201
        assert await resp.get_json() == {"path": "deep/er/page one.html", "url": f"{MOUNT}/deep/er/page%20one.html",
                                         "bytes": 16, "created": True}
        assert (root / "deep" / "er" / "page one.html").read_bytes() == b"<body>one</body>"

        resp = await client.put(f"{MOUNT}/files/deep/er/page%20one.html", data=b"<body>two</body>",
                                headers=AUTH_HEADERS)
        assert resp.status_code == 200
        assert (await resp.get_json())["created"] is False
        page = await client.get(f"{MOUNT}/deep/er/page%20one.html", headers=AUTH_HEADERS)
        assert (await page.get_data()).startswith(b"<body>two")

        empty = await client.put(f"{MOUNT}/files/empty.txt", data=b"", headers=AUTH_HEADERS)
        assert empty.status_code == 201 and (root / "empty.txt").read_bytes() == b""
    assert not [n for _, _, names in os.walk(root) for n in names if n.startswith(".canvas-upload-")]


async def test_writes_need_the_bearer_token_not_the_cookie(canvas_app: Callable[..., Quart], root: Path) -> None:
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        login = await client.get(f"{MOUNT}/?token={TEST_TOKEN}")
        cookie = login.headers["Set-Cookie"].split(";")[0]
        for headers in ({}, {"Cookie": cookie}, {"Authorization": "Bearer wrong-token-000"}):
            resp = await client.put(f"{MOUNT}/files/x.html", data=b"x", headers=headers)
            assert resp.status_code == 401, headers
            resp = await client.delete(f"{MOUNT}/files/index.html", headers=headers)
            assert resp.status_code == 401, headers
    assert not (root / "x.html").exists()


async def test_size_limit(canvas_app: Callable[..., Quart], root: Path) -> None:
    async with canvas_app(max_file_bytes=1000).test_app() as ta:
        client = ta.test_client()
        ok = await client.put(f"{MOUNT}/files/ok.bin", data=b"a" * 1000, headers=AUTH_HEADERS)
        assert ok.status_code == 201
        big = await client.put(f"{MOUNT}/files/big.bin", data=b"a" * 1001, headers=AUTH_HEADERS)
        assert big.status_code == 413
        assert (await big.get_json())["error"]["code"] == "request_too_large"
    assert not (root / "big.bin").exists()


def test_size_limit_on_a_chunked_upload(canvas_app: Callable[..., Quart], root: Path, live_server: Callable) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield b"b" * 1000

    with live_server(canvas_app(max_file_bytes=10_000)) as base:
        resp = httpx.put(f"{base}{MOUNT}/files/chunked.bin", content=body(), headers=AUTH_HEADERS)
    assert resp.status_code == 413
    assert not (root / "chunked.bin").exists()


async def test_bad_write_paths(canvas_app: Callable[..., Quart], root: Path, raw_open: Callable[..., Any]) -> None:
    (root / "dir").mkdir()
    (root / "dir" / "keep.txt").write_text("k")
    (root / "file.txt").write_text("f")
    cases = {
        f"{MOUNT}/files/": 400,  # names nothing
        f"{MOUNT}/files/dir/": 400,  # names a directory, not a file
        f"{MOUNT}/files/dir": 409,  # a directory stands there
        f"{MOUNT}/files/file.txt/child.txt": 409,  # a file stands where a directory is needed
        f"{MOUNT}/files/.env": 404,
        f"{MOUNT}/files/a/.git/config": 404,
        f"{MOUNT}/files/%2e%2e/escape.txt": 404,
        f"{MOUNT}/files/a%2fb.txt": 404,
        f"{MOUNT}/files/a%5cb.txt": 404,
        f"{MOUNT}/files/%00.txt": 400,
        f"{MOUNT}/files/%zz.txt": 400,
        f"{MOUNT}/other.txt": 405,  # writes live under files/ only
    }
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        for url, status in cases.items():
            # Sent raw: the test client would decode %2F into a real slash.
            resp = await raw_open(client, "PUT", url.encode(), AUTH_HEADERS, b"x")
            assert resp.status_code == status, (url, await resp.get_data())
            error = (await resp.get_json())["error"]
            assert error["message"]
            if status != 405:  # the path is the field at fault
                assert error["param"] == "path", (url, error)
        resp = await client.delete(f"{MOUNT}/files/", headers=AUTH_HEADERS)
        assert resp.status_code == 400 and "name a file" in (await resp.get_json())["error"]["message"]
    assert sorted(n for _, dirs, names in os.walk(root) for n in dirs + names) == ["dir", "file.txt", "keep.txt"]


async def test_delete(canvas_app: Callable[..., Quart], root: Path) -> None:
    (root / "a.txt").write_text("a")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("x")
    (root / "empty").mkdir()
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        assert (await client.delete(f"{MOUNT}/files/a.txt", headers=AUTH_HEADERS)).status_code == 204
        assert not (root / "a.txt").exists()
        assert (await client.delete(f"{MOUNT}/files/a.txt", headers=AUTH_HEADERS)).status_code == 404
        assert (await client.delete(f"{MOUNT}/files/nope/deeper.txt", headers=AUTH_HEADERS)).status_code == 404
        assert (await client.delete(f"{MOUNT}/files/full", headers=AUTH_HEADERS)).status_code == 409
        assert (root / "full" / "x").exists()
        assert (await client.delete(f"{MOUNT}/files/empty", headers=AUTH_HEADERS)).status_code == 204
        assert not (root / "empty").exists()
        assert (await client.delete(f"{MOUNT}/files/..%2ffull", headers=AUTH_HEADERS)).status_code == 404


def test_readers_never_see_half_a_file(canvas_app: Callable[..., Quart], root: Path, live_server: Callable) -> None:
    versions = [b"A" * 400_000, b"B" * 300_000]
    (root / "big.txt").write_bytes(versions[0])
    stop = threading.Event()
    bodies: list[bytes] = []

    def read_loop(base: str) -> None:
        with httpx.Client(headers=AUTH_HEADERS) as client:
            while not stop.is_set():
                bodies.append(client.get(f"{base}{MOUNT}/big.txt").content)

    with live_server(canvas_app(live_reload=False)) as base:
        reader = threading.Thread(target=read_loop, args=(base,))
        reader.start()
        try:
            with httpx.Client(headers=AUTH_HEADERS) as client:
                for i in range(20):
                    resp = client.put(f"{base}{MOUNT}/files/big.txt", content=versions[i % 2])
                    assert resp.status_code == 200
        finally:
            stop.set()
            reader.join()
    assert bodies
    assert all(body in versions for body in bodies), {len(b) for b in bodies}
