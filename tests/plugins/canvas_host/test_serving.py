"""Serving the canvas folder: index pages, MIME types, caching headers, ETag/304, HEAD."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from quart import Quart

from kernel.testing import AUTH_HEADERS
from plugins.canvas_host import respond
from plugins.canvas_host.pages import demo_index

MOUNT = "/__kernel__/canvas"
SCRIPT_MARK = b"/* canvas live reload */"


async def test_missing_root_is_created_with_a_demo_page(canvas_app: Callable[..., Quart], tmp_path: Path) -> None:
    app = canvas_app()
    root = tmp_path / "state" / "canvas"
    assert not root.exists()
    async with app.test_app() as ta:
        assert (root / "index.html").read_text() == demo_index(MOUNT)
        resp = await ta.test_client().get(f"{MOUNT}/", headers=AUTH_HEADERS)
        body = await resp.get_data()
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<h1>Canvas</h1>" in body
    # The live-reload script sits right before </body>.
    assert body.index(SCRIPT_MARK) < body.rindex(b"</body>")
    assert body.rindex(b"</script>") + len(b"</script>") == body.rindex(b"</body>")


async def test_existing_root_is_left_alone(canvas_app: Callable[..., Quart], root: Path) -> None:
    async with canvas_app().test_app() as ta:
        assert os.listdir(root) == []
        resp = await ta.test_client().get(f"{MOUNT}/", headers=AUTH_HEADERS)
    assert resp.status_code == 404
    assert (await resp.get_json())["error"]["type"] == "not_found_error"


async def test_relative_root_is_taken_from_the_config_folder(
    canvas_app: Callable[..., Quart], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hi there")
    async with canvas_app(root="site").test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/hello.txt", headers=AUTH_HEADERS)
        assert await resp.get_data() == b"hi there"


async def test_mime_types_headers_and_exact_bytes(canvas_app: Callable[..., Quart], root: Path) -> None:
    files = {
        "app.js": (b"console.log(1)", "text/javascript; charset=utf-8"),
        "style.css": (b"body{}", "text/css; charset=utf-8"),
        "data.json": (b'{"a":1}', "application/json; charset=utf-8"),
        "logo.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml; charset=utf-8"),
        "img/pic.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png"),
        "lib.wasm": (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
        "blob.bin": (os.urandom(64), "application/octet-stream"),
    }
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        for name, (data, ctype) in files.items():
            resp = await client.get(f"{MOUNT}/{name}", headers=AUTH_HEADERS)
            assert resp.status_code == 200, name
            assert resp.headers["Content-Type"] == ctype, name
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert await resp.get_data() == data, name  # only HTML gets the script


async def test_directories_serve_index_and_redirect_to_the_slash_form(
    canvas_app: Callable[..., Quart], root: Path
) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<body>sub page</body>")
    (root / "empty").mkdir()
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        resp = await client.get(f"{MOUNT}/sub?x=1", headers=AUTH_HEADERS)
        assert resp.status_code == 308
        assert resp.headers["Location"] == f"{MOUNT}/sub/?x=1"
        resp = await client.get(f"{MOUNT}/sub/", headers=AUTH_HEADERS)
        assert resp.status_code == 200
        assert (await resp.get_data()).startswith(b"<body>sub page<script>")
        resp = await client.get(MOUNT, headers=AUTH_HEADERS)
        assert resp.status_code == 308 and resp.headers["Location"] == f"{MOUNT}/"
        assert (await client.get(f"{MOUNT}/empty/", headers=AUTH_HEADERS)).status_code == 404
        assert (await client.get(f"{MOUNT}/missing.html", headers=AUTH_HEADERS)).status_code == 404
        # A file is not a directory.
        (root / "f.txt").write_text("x")
        assert (await client.get(f"{MOUNT}/f.txt/", headers=AUTH_HEADERS)).status_code == 404
        assert (await client.get(f"{MOUNT}/f.txt/more", headers=AUTH_HEADERS)).status_code == 404


async def test_etag_and_if_none_match(canvas_app: Callable[..., Quart], root: Path) -> None:
    (root / "page.html").write_text("<body>v1</body>")
    (root / "a.css").write_text("p{}")
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        first = await client.get(f"{MOUNT}/page.html", headers=AUTH_HEADERS)
        etag = first.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        again = await client.get(f"{MOUNT}/page.html", headers=AUTH_HEADERS)
        assert again.headers["ETag"] == etag  # stable while the file is unchanged

        for header in (etag, f'W/{etag}', f'"nope", {etag}', "*"):
            resp = await client.get(f"{MOUNT}/page.html", headers={**AUTH_HEADERS, "If-None-Match": header})
            assert resp.status_code == 304, header
            assert await resp.get_data() == b""
            assert resp.headers["ETag"] == etag
            assert resp.headers["Cache-Control"] == "no-store"
        resp = await client.get(f"{MOUNT}/page.html", headers={**AUTH_HEADERS, "If-None-Match": '"nope"'})
        assert resp.status_code == 200

        # Same size, new bytes: a new tag, and the old one no longer matches.
        (root / "page.html").write_text("<body>v2</body>")
        resp = await client.get(f"{MOUNT}/page.html", headers={**AUTH_HEADERS, "If-None-Match": etag})
        assert resp.status_code == 200
        assert resp.headers["ETag"] != etag
        assert b"v2" in await resp.get_data()
        css = await client.get(f"{MOUNT}/a.css", headers=AUTH_HEADERS)
        assert css.headers["ETag"] not in (etag, resp.headers["ETag"])


async def test_large_files_stream_with_a_stat_etag(canvas_app: Callable[..., Quart], root: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (root / "big.bin").write_bytes(data)
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        resp = await client.get(f"{MOUNT}/big.bin", headers=AUTH_HEADERS)
        assert resp.status_code == 200
        assert await resp.get_data() == data
        etag = resp.headers["ETag"]
        resp = await client.get(f"{MOUNT}/big.bin", headers={**AUTH_HEADERS, "If-None-Match": etag})
        assert resp.status_code == 304
        # Replacing the file (new inode, as the PUT endpoint does) changes the tag.
        (root / "big.tmp").write_bytes(data)
        os.replace(root / "big.tmp", root / "big.bin")
        resp = await client.get(f"{MOUNT}/big.bin", headers={**AUTH_HEADERS, "If-None-Match": etag})
        assert resp.status_code == 200


def test_head_over_the_wire(canvas_app: Callable[..., Quart], root: Path, live_server: Callable) -> None:
    (root / "index.html").write_text("<html><body>head test</body></html>")
    (root / "big.bin").write_bytes(b"z" * (2 * 1024 * 1024))
    with live_server(canvas_app()) as base:
        for name in ("index.html", "big.bin"):
            got = httpx.get(f"{base}{MOUNT}/{name}", headers=AUTH_HEADERS)
            head = httpx.head(f"{base}{MOUNT}/{name}", headers=AUTH_HEADERS)
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["Content-Length"] == str(len(got.content)), name
            assert head.headers["ETag"] == got.headers["ETag"]
            assert head.headers["Content-Type"] == got.headers["Content-Type"]
        etag = httpx.get(f"{base}{MOUNT}/index.html", headers=AUTH_HEADERS).headers["ETag"]
        head = httpx.head(f"{base}{MOUNT}/index.html", headers={**AUTH_HEADERS, "If-None-Match": etag})
        assert head.status_code == 304


async def test_live_reload_off_serves_html_untouched(canvas_app: Callable[..., Quart], root: Path) -> None:
    html = b"<html><body>plain</body></html>"
    (root / "index.html").write_bytes(html)
    async with canvas_app(live_reload=False).test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/", headers=AUTH_HEADERS)
        assert await resp.get_data() == html


async def test_html_without_body_tag_gets_the_script_appended(canvas_app: Callable[..., Quart], root: Path) -> None:
    (root / "frag.htm").write_bytes(b"<p>fragment")
    async with canvas_app().test_app() as ta:
        body = await (await ta.test_client().get(f"{MOUNT}/frag.htm", headers=AUTH_HEADERS)).get_data()
    assert body.startswith(b"<p>fragment<script>")
    assert body.endswith(b"</script>")


async def test_special_files_are_not_served(canvas_app: Callable[..., Quart], root: Path) -> None:
    os.mkfifo(root / "pipe.html")  # opening a FIFO for reading would block a naive server
    (root / ".env").write_text("SECRET=1")
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        assert (await client.get(f"{MOUNT}/pipe.html", headers=AUTH_HEADERS)).status_code == 404
        assert (await client.get(f"{MOUNT}/.env", headers=AUTH_HEADERS)).status_code == 404


async def test_custom_mount(canvas_app: Callable[..., Quart], root: Path) -> None:
    (root / "x.txt").write_text("x")
    async with canvas_app(mount="/canvas").test_app() as ta:
        client = ta.test_client()
        assert await (await client.get("/canvas/x.txt", headers=AUTH_HEADERS)).get_data() == b"x"
        assert (await client.get(f"{MOUNT}/x.txt", headers=AUTH_HEADERS)).status_code == 404


async def test_no_file_descriptor_leaks(canvas_app: Callable[..., Quart], root: Path) -> None:
    (root / "index.html").write_text("<body>x</body>")
    (root / "big.bin").write_bytes(b"q" * (2 * 1024 * 1024))
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    async with canvas_app(live_reload=False).test_app() as ta:
        client = ta.test_client()
        etag = (await client.get(f"{MOUNT}/big.bin", headers=AUTH_HEADERS)).headers["ETag"]
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(30):
            for method, url, extra in (
                ("GET", "big.bin", {}), ("HEAD", "big.bin", {}), ("GET", "big.bin", {"If-None-Match": etag}),
                ("GET", "index.html", {}), ("GET", "index.html/", {}), ("GET", "dir/", {}), ("GET", "dir", {}),
                ("GET", "fifo", {}), ("GET", "missing", {}),
            ):
                resp = await client.open(f"{MOUNT}/{url}", method=method, headers={**AUTH_HEADERS, **extra})
                await resp.get_data()
        assert len(os.listdir("/proc/self/fd")) <= before



def test_a_root_that_cannot_be_created_stops_startup_with_a_clear_error(
    canvas_app: Callable[..., Quart], tmp_path: Path, live_server: Callable
) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RuntimeError) as info, live_server(canvas_app(root="a_file/canvas")):
        pass
    message = repr(info.value.__cause__ or info.value)
    assert "[plugins.canvas_host] root" in message and "a_file/canvas" in message and "cannot be created" in message


async def test_huge_html_is_served_untouched(
    canvas_app: Callable[..., Quart], root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTML past the injection limit is streamed as it is rather than read whole into memory."""
    monkeypatch.setattr(respond, "READ_WHOLE_BYTES", 64)
    monkeypatch.setattr(respond, "MAX_INJECT_BYTES", 1000)
    small, huge = b"<body>small</body>", b"<body>" + b"x" * 2000 + b"</body>"
    (root / "small.html").write_bytes(small)
    (root / "huge.html").write_bytes(huge)
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        assert SCRIPT_MARK in await (await client.get(f"{MOUNT}/small.html", headers=AUTH_HEADERS)).get_data()
        resp = await client.get(f"{MOUNT}/huge.html", headers=AUTH_HEADERS)
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await resp.get_data() == huge


def test_a_root_that_is_a_file_stops_startup_with_a_clear_error(
    canvas_app: Callable[..., Quart], tmp_path: Path, live_server: Callable
) -> None:
    (tmp_path / "not_a_dir").write_text("x")
    with pytest.raises(RuntimeError) as info, live_server(canvas_app(root="not_a_dir")):
        pass
    message = repr(info.value.__cause__ or info.value)
    assert "canvas_host" in message and "not_a_dir" in message and "is not a directory" in message
