"""Live reload over a real server: file changes reach open sockets as ``reload``."""

from __future__ import annotations

import logging
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websockets.sync.client as ws_client
from quart import Quart
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, serve_process
from plugins.canvas_host.host import EXTENSION_KEY, CanvasHost

MOUNT = "/__kernel__/canvas"
# Longer than debounce (75 ms) plus watchfiles' step, with room for a busy machine.
QUIET_SECONDS = 0.6


def host_of(app: Quart) -> CanvasHost:
    return app.extensions[EXTENSION_KEY]


def wait_until_watching(host: CanvasHost, root: Path, poll: Callable[..., None]) -> None:
    """The watcher registers its watches in a thread after startup: write until it reports."""
    start = host.hub.broadcasts
    n = 0

    def changed() -> bool:
        nonlocal n
        n += 1
        (root / "probe.txt").write_text(str(n))
        time.sleep(0.05)
        return host.hub.broadcasts > start

    poll(changed, timeout=15, what="the canvas watcher to report a change")
    time.sleep(QUIET_SECONDS)  # let the probe's batch drain before the real test


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + f"{MOUNT}/ws"


def test_file_change_sends_reload_to_every_socket(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None]
) -> None:
    app = canvas_app()
    host = host_of(app)
    with live_server(app) as base:
        wait_until_watching(host, root, poll)
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as one, \
                ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as two:
            poll(lambda: host.hub.clients == 2, what="both sockets to subscribe")
            with pytest.raises(TimeoutError):
                one.recv(timeout=0.2)  # nothing changed: nothing sent
            (root / "index.html").write_text("<body>v2</body>")
            assert one.recv(timeout=5) == "reload"
            assert two.recv(timeout=5) == "reload"
            # A write through the API is a change too (its temp file is not a second one).
            before = host.hub.broadcasts
            resp = httpx.put(f"{base}{MOUNT}/files/app.js", content=b"let v = 3;", headers=AUTH_HEADERS)
            assert resp.status_code == 201
            assert one.recv(timeout=5) == "reload"
            time.sleep(QUIET_SECONDS)
            assert host.hub.broadcasts == before + 1
        poll(lambda: host.hub.clients == 0, what="closed sockets to unsubscribe")


def test_ignored_files_and_debounce(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None]
) -> None:
    app = canvas_app()
    host = host_of(app)
    (root / "node_modules").mkdir()
    (root / ".git").mkdir()
    with live_server(app) as base:
        wait_until_watching(host, root, poll)
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as sock:
            before = host.hub.broadcasts
            for name in (".hidden", ".git/index", "node_modules/lib.js", "page.html~", ".page.html.swp", "4913",
                         ".#page.html"):
                (root / name).write_text("ignored")
            time.sleep(QUIET_SECONDS)
            assert host.hub.broadcasts == before
            with pytest.raises(TimeoutError):
                sock.recv(timeout=0.1)
            # A burst of real changes is one reload, not twenty.
            for i in range(20):
                (root / f"burst{i}.css").write_text(f"p{{order:{i}}}")
            assert sock.recv(timeout=5) == "reload"
            time.sleep(QUIET_SECONDS)
            assert host.hub.broadcasts - before <= 2


def test_debounce_is_a_quiet_period(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None]
) -> None:
    """Changes closer together than debounce_ms are one reload, however long they go on.

    One new file every 40 ms for about 1.2 s, with debounce_ms = 300: a quiet-period
    debounce announces it once (twice if the machine stalls for 260 ms); a cap on the
    batch length instead (reload at most 300 ms after the first change) gives four or more.
    """
    app = canvas_app(debounce_ms=300)
    host = host_of(app)
    with live_server(app) as base:
        wait_until_watching(host, root, poll)
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as sock:
            poll(lambda: host.hub.clients == 1, what="the socket to subscribe")
            before = host.hub.broadcasts
            for i in range(30):
                (root / f"frame{i}.json").write_text(str(i))
                time.sleep(0.04)
            assert sock.recv(timeout=5) == "reload"
            time.sleep(1.0)
            assert 1 <= host.hub.broadcasts - before <= 2
            # And once it is quiet, the next change is announced on its own.
            (root / "after.json").write_text("{}")
            assert sock.recv(timeout=5) == "reload"


def test_root_removed_and_recreated_keeps_reloading(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleting the folder (or swapping in another) must not silently end live reload."""
    caplog.set_level(logging.INFO, logger="plugins.canvas_host")
    app = canvas_app()
    host = host_of(app)
    with live_server(app) as base:
        wait_until_watching(host, root, poll)
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as sock:
            poll(lambda: host.hub.clients == 1, what="the socket to subscribe")
            shutil.rmtree(root)
            assert sock.recv(timeout=5) == "reload"  # the pages are gone: say so
            poll(lambda: "is missing" in caplog.text, what="the watcher to notice the missing root")
            root.mkdir()
            (root / "index.html").write_text("<body>back</body>")
            assert sock.recv(timeout=10) == "reload"
            assert httpx.get(f"{base}{MOUNT}/", headers=AUTH_HEADERS).text.startswith("<body>back")
            # The new folder is really watched: a later edit still reaches the page.
            time.sleep(QUIET_SECONDS)
            before = host.hub.broadcasts
            (root / "index.html").write_text("<body>edited</body>")
            poll(lambda: host.hub.broadcasts > before, what="a reload for an edit in the recreated root")
            assert sock.recv(timeout=5) == "reload"

            # Swapped for another folder by rename (a deploy): watched afresh too.
            time.sleep(QUIET_SECONDS)
            root.rename(root.with_name("canvas.old"))
            fresh = root.with_name("canvas.new")
            fresh.mkdir()
            (fresh / "index.html").write_text("<body>swapped</body>")
            fresh.rename(root)
            poll(lambda: "removed or replaced" in caplog.text, what="the watcher to notice the swap")
            time.sleep(QUIET_SECONDS)
            before = host.hub.broadcasts
            (root / "index.html").write_text("<body>edited again</body>")
            poll(lambda: host.hub.broadcasts > before, what="a reload for an edit in the swapped-in root")
    assert caplog.text.count("is missing") == 1  # said once, not once a second


def test_live_reload_off_means_no_socket_no_script_no_watcher(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable
) -> None:
    (root / "index.html").write_text("<body>quiet</body>")
    app = canvas_app(live_reload=False)
    with live_server(app) as base:
        assert host_of(app).watcher is None
        page = httpx.get(f"{base}{MOUNT}/", headers=AUTH_HEADERS)
        assert page.content == b"<body>quiet</body>"
        with pytest.raises(InvalidStatus) as info:
            ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS, open_timeout=5).close()
        assert info.value.response.status_code == 404
        # With live reload on, other socket paths below the mount are a clean 404 too.
    with live_server(canvas_app()) as base:
        with pytest.raises(InvalidStatus) as info:
            ws_client.connect(base.replace("http://", "ws://") + f"{MOUNT}/wss", additional_headers=AUTH_HEADERS,
                              open_timeout=5).close()
        assert info.value.response.status_code == 404


def test_watcher_starts_with_the_server_and_stops_cleanly(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plugins.canvas_host")
    app = canvas_app()
    host = host_of(app)
    assert host.watcher is None
    with live_server(app):
        watcher = host.watcher
        assert watcher is not None and watcher.running
        task = watcher._task
        # The log says where the canvas is and how to get in.
        assert f"canvas: serving {root.resolve()} at {MOUNT}/ (open it once with ?token=" in caplog.text
    assert host.watcher is None
    assert task is not None and task.done() and not task.cancelled()
    assert task.exception() is None
    assert "did not stop" not in caplog.text


def test_open_tabs_do_not_hold_up_a_gateway_shutdown(tmp_path: Path, poll: Callable[..., None]) -> None:
    """SIGINT with a live-reload socket open: the socket is closed at once with 1001 (going away).

    Hypercorn waits for open connections for up to the grace period (60 s here) before
    shutdown hooks run; a socket left to that would be cut off with 1011 a minute later.
    """
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[kernel]\nstate_dir = "state"\nshutdown_grace_seconds = 60\n[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[agents.main]\nprovider = "echo"\n[plugins.echo]\nenabled = true\n[plugins.canvas_host]\nenabled = true\n',
        encoding="utf-8",
    )
    with serve_process(config) as served:
        proc, base, err = served.proc, served.base, served.stderr
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS, open_timeout=10) as sock:
            proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosedOK) as info:
                sock.recv(timeout=20)  # far below the 60 s grace period
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert proc.wait(30) == 0
        assert "closing 1 live-reload socket" in err.read_text()


def test_a_client_message_closes_the_socket_instead_of_queueing(
    canvas_app: Callable[..., Quart], live_server: Callable, poll: Callable[..., None]
) -> None:
    """Quart queues what a client sends, without limit, until the view reads it; the
    reload socket reads and refuses, so nothing piles up however much a page sends."""
    from websockets.exceptions import ConnectionClosedError

    app = canvas_app()
    host = host_of(app)
    with live_server(app) as base:
        with ws_client.connect(ws_url(base), additional_headers=AUTH_HEADERS) as sock:
            poll(lambda: host.hub.clients == 1, what="the socket to subscribe")
            sock.send("x" * 100_000)
            with pytest.raises(ConnectionClosedError) as info:
                sock.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        poll(lambda: host.hub.clients == 0, what="the refused socket to unsubscribe")
