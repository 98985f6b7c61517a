"""Unit tests: path parsing, MIME types, ETags, script injection, cookie sessions, watch filter."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from watchfiles import Change

from plugins.canvas_host import livereload
from plugins.canvas_host.content import content_type, etag_for_bytes, inject, none_match, reload_script
from plugins.canvas_host.livereload import CanvasFilter, ReloadHub, Watcher
from plugins.canvas_host.paths import MAX_PATH_BYTES, PathRejected, raw_path_of, split_path
from plugins.canvas_host.session import KEY_FILE, CookieSessions, load_or_create_key

PREFIX = ("__kernel__", "canvas")


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(("raw", "segments", "slash"), [
    (b"/__kernel__/canvas", (), False),
    (b"/__kernel__/canvas/", (), True),
    (b"/__kernel__/canvas/a/b.html", ("a", "b.html"), False),
    (b"/__kernel__/canvas/sub/", ("sub",), True),
    (b"/__kernel__/canvas/caf%C3%A9%20x.html", ("caf\u00e9 x.html",), False),
    (b"/__kernel__/%63anvas/x", ("x",), False),  # an escaped mount is still the mount
    (b"/__kernel__/canvas/%252e%252e", ("%2e%2e",), False),  # double-encoded: a literal name
    (b"/__kernel__/canvas/%E2%80%A4%E2%80%A4", ("\u2024\u2024",), False),  # one-dot leaders: a plain name
])
def test_split_path_accepts(raw: bytes, segments: tuple[str, ...], slash: bool) -> None:
    path = split_path(raw, PREFIX)
    assert path.segments == segments
    assert path.trailing_slash is slash


@pytest.mark.parametrize(("raw", "status"), [
    (b"/__kernel__/canvas/%zz", 400),
    (b"/__kernel__/canvas/%2", 400),
    (b"/__kernel__/canvas/a%", 400),
    (b"/__kernel__/canvas/%00", 400),
    (b"/__kernel__/canvas/a%00.html", 400),
    (b"/__kernel__/canvas/%c0%ae%c0%ae/x", 400),  # overlong UTF-8 for '.'
    (b"/__kernel__/canvas/%c0%80", 400),  # overlong NUL
    (b"/__kernel__/canvas/%ed%a0%80", 400),  # a UTF-16 surrogate
    (b"/__kernel__/canvas/%ff", 400),
    (b"/__kernel__/%zz/canvas/x", 400),  # malformed anywhere is malformed
    (b"/__kernel__/canvas/..", 404),
    (b"/__kernel__/canvas/../x", 404),
    (b"/__kernel__/canvas/a/../../x", 404),
    (b"/__kernel__/canvas/%2e%2e/x", 404),
    (b"/__kernel__/canvas/.%2E/x", 404),
    (b"/__kernel__/canvas/./x", 404),
    (b"/__kernel__/canvas//etc/passwd", 404),
    (b"/__kernel__/canvas/a//b", 404),
    (b"/__kernel__/canvas/..%2fetc", 404),
    (b"/__kernel__/canvas/%2Fetc%2Fpasswd", 404),
    (b"/__kernel__/canvas/..%5c..%5cetc", 404),
    (b"/__kernel__/canvas/a\\b", 404),
    (b"/__kernel__/canvas/.git/config", 404),
    (b"/__kernel__/canvas/%2egit/config", 404),
    (b"/__kernel__/canvas/" + b"a" * 300, 404),
    (b"/__kernel__/canvasx/a", 404),
    (b"/other/a", 404),
    (b"__kernel__/canvas/a", 404),
])
def test_split_path_rejects(raw: bytes, status: int) -> None:
    with pytest.raises(PathRejected) as info:
        split_path(raw, PREFIX)
    assert info.value.status == status


def test_path_length_limit() -> None:
    # Segments of 100 bytes joined by '/': exactly the limit passes, one byte more is a 404.
    fits = "/".join(["a" * 99] * 10) + "/" + "b" * (MAX_PATH_BYTES - 1000 - 1)
    assert len(fits.encode()) == MAX_PATH_BYTES - 1
    assert split_path(f"/__kernel__/canvas/{fits}".encode(), PREFIX).display == fits
    exact = fits + "c"
    assert split_path(f"/__kernel__/canvas/{exact}".encode(), PREFIX).display == exact
    with pytest.raises(PathRejected) as info:
        split_path(f"/__kernel__/canvas/{exact}c".encode(), PREFIX)
    assert info.value.status == 404 and "longer than" in info.value.reason
    deep = "/".join(["d"] * 600)  # short names, but a tree far too deep
    with pytest.raises(PathRejected):
        split_path(f"/__kernel__/canvas/{deep}/x.html".encode(), PREFIX)


def test_raw_path_of_strips_query_and_absolute_form() -> None:
    assert raw_path_of({"raw_path": b"/a/b?x=1"}) == b"/a/b"
    assert raw_path_of({"raw_path": b"http://h:1/a/%2e"}) == b"/a/%2e"
    # No raw path from the server: re-encode the decoded one, keeping it parseable.
    assert raw_path_of({"path": "/a b/%"}) == b"/a%20b/%25"


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize(("name", "expected"), [
    ("index.html", "text/html; charset=utf-8"),
    ("PAGE.HTM", "text/html; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("mod.mjs", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("pic.png", "image/png"),
    ("pic.jpeg", "image/jpeg"),
    ("lib.wasm", "application/wasm"),
    ("font.woff2", "font/woff2"),
    ("notes.txt", "text/plain; charset=utf-8"),
    ("blob.unknownext", "application/octet-stream"),
    ("noext", "application/octet-stream"),
])
def test_content_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_inject_goes_before_the_last_body_close_in_any_case() -> None:
    script = b"<script>X</script>"
    assert inject(b"<html><BODY>a</Body ></html>", script) == b"<html><BODY>a<script>X</script></Body ></html>"
    # A '</body>' inside an earlier script string is not the real one: the last wins.
    doc = b"<body><script>s='</body>'</script></body>"
    assert inject(doc, script) == b"<body><script>s='</body>'</script><script>X</script></body>"
    assert inject(b"<p>no body tag", script) == b"<p>no body tag<script>X</script>"


def test_reload_script_points_at_the_mount_socket() -> None:
    script = reload_script("/x/canvas").decode()
    assert '"/x/canvas/ws"' in script
    assert "location.reload()" in script and "setTimeout(connect" in script


def test_etag_and_if_none_match() -> None:
    tag = etag_for_bytes(b"abc")
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith('W/')
    assert tag != etag_for_bytes(b"abd")
    assert none_match(tag, tag)
    assert none_match(f'"other", W/{tag}', tag)  # If-None-Match uses the weak comparison
    assert none_match("*", tag)
    assert not none_match('"other"', tag)
    assert not none_match(None, tag)


# --------------------------------------------------------------------------- sessions


def test_cookie_sessions_sign_principals_and_follow_secret_changes(tmp_path: Path) -> None:
    secrets = {"default": "main-secret", "ci": "ci-secret"}
    sessions = CookieSessions(secrets.get, lambda: load_or_create_key(tmp_path))
    value = sessions.issue("default")
    assert "main-secret" not in value
    assert sessions.principal_for(value) == "default"
    assert sessions.principal_for(sessions.issue("ci")) == "ci"
    # Tampering with either half fails.
    name, _, mac = value.rpartition(".")
    assert sessions.principal_for(f"{name}.{mac[:-2]}AA") is None
    assert sessions.principal_for(sessions.issue("ci").rpartition(".")[0] + "." + mac) is None
    for junk in ("", ".", "abc", "%%%.%%%", "x" * 5000, "a.b.c"):
        assert sessions.principal_for(junk) is None
    # Rotating the secret ends the session.
    secrets["default"] = "rotated"
    assert sessions.principal_for(value) is None


def test_cookie_key_persists_with_private_mode(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    assert len(first) == 32
    assert load_or_create_key(tmp_path) == first
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    # A key from another process survives a restart: a new CookieSessions accepts old cookies.
    a = CookieSessions({"default": "s"}.get, lambda: load_or_create_key(tmp_path))
    b = CookieSessions({"default": "s"}.get, lambda: load_or_create_key(tmp_path))
    assert b.principal_for(a.issue("default")) == "default"


def test_cookie_key_falls_back_when_state_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    assert len(load_or_create_key(blocker / "state")) == 32


# --------------------------------------------------------------------------- live reload pieces


def test_filter_ignores_hidden_node_modules_and_editor_files(tmp_path: Path) -> None:
    root = tmp_path / ".kernel" / "canvas"  # the root itself may live in a hidden dir
    keep = CanvasFilter(root)
    for rel in ("index.html", "js/app.js", "a/b/c.css"):
        assert keep(Change.modified, str(root / rel)), rel
    for rel in (".hidden", "sub/.git/HEAD", "node_modules/x/index.js", "index.html~", ".index.html.swp",
                "page.swx", "4913", ".#index.html", ".canvas-upload-1234.tmp", "a.html.___jb_tmp___"):
        assert not keep(Change.modified, str(root / rel)), rel


async def test_hub_broadcasts_to_each_subscriber_and_closes() -> None:
    hub = ReloadHub()
    async with hub.subscribe() as one, hub.subscribe() as two:
        assert hub.clients == 2
        hub.broadcast()
        hub.broadcast()  # coalesced: one pending reload per socket is enough
        assert one.get_nowait() == "reload" and two.get_nowait() == "reload"
        assert one.empty()
        hub.broadcast()
        hub.close()
        assert one.get_nowait() is None and two.get_nowait() is None
    assert hub.clients == 0
    assert hub.broadcasts == 3



async def test_watcher_retries_with_backoff_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher that cannot start (say, the inotify limit) retries ever more slowly, warning once."""
    caplog.set_level(logging.DEBUG, logger="plugins.canvas_host")

    def no_watches(*args: object, **kwargs: object) -> None:
        raise OSError(28, "OS file watch limit reached")

    watcher = Watcher(tmp_path, ReloadHub(), 75)
    pauses: list[float] = []
    enough = asyncio.Event()

    async def record_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 8:
            enough.set()
        await asyncio.sleep(0)

    monkeypatch.setattr(livereload, "awatch", no_watches)
    monkeypatch.setattr(watcher, "_pause", record_pause)
    watcher.start()
    task = watcher._task
    await asyncio.wait_for(enough.wait(), 10)
    await watcher.stop()
    del pauses[8:]
    assert task is not None and task.done() and task.exception() is None
    assert pauses == [1, 2, 4, 8, 16, 30, 30, 30]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "watch limit" in warnings[0].getMessage()
