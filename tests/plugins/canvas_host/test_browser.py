"""The real thing: headless Chromium logs in through ?token=, and reloads when a file changes.

Uses Debian's /usr/bin/chromium driven by Playwright (never `playwright install`).
Skipped, with the reason, only when that browser is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from quart import Quart

import kernel.testing
from kernel.testing import TEST_TOKEN
from plugins.canvas_host.host import EXTENSION_KEY, CanvasHost
from plugins.canvas_host.session import COOKIE_NAME

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
MOUNT = "/__kernel__/canvas"


def page_html(text: str) -> str:
    return f'<!doctype html><html><head><title>t</title></head><body><h1 id="v">{text}</h1></body></html>'


def shows(text: str) -> str:
    return f"document.getElementById('v') !== null && document.getElementById('v').textContent === {text!r}"


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium'); the browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def watching(host: CanvasHost, root: Path, poll: Callable[..., None]) -> None:
    """Wait until the watcher reports a change (it registers its watches after startup)."""
    start, n = host.hub.broadcasts, 0

    def changed() -> bool:
        nonlocal n
        n += 1
        (root / "probe.txt").write_text(str(n))
        time.sleep(0.05)
        return host.hub.broadcasts > start

    poll(changed, timeout=15, what="the canvas watcher")
    time.sleep(0.5)


def test_page_reloads_with_new_content_after_a_file_changes(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None], browser: object
) -> None:
    (root / "index.html").write_text(page_html("version one"))
    app = canvas_app()
    host: CanvasHost = app.extensions[EXTENSION_KEY]
    with live_server(app) as base:
        watching(host, root, poll)
        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))

        page.goto(f"{base}{MOUNT}/?token={TEST_TOKEN}")
        assert page.url == f"{base}{MOUNT}/"  # the 303 dropped the token from the address bar
        assert page.text_content("#v") == "version one"
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies[COOKIE_NAME]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict" and session["path"] == MOUNT
        assert TEST_TOKEN not in session["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

        # The injected script opened the live-reload socket with the cookie alone.
        poll(lambda: host.hub.clients == 1, what="the page's live-reload socket")
        loads_before = len(loads)
        started = time.monotonic()
        (root / "index.html").write_text(page_html("version two"))
        page.wait_for_function(shows("version two"), timeout=5000)
        print(f"\nbrowser showed the new content {time.monotonic() - started:.2f}s after the write")
        assert len(loads) > loads_before  # a real page load, not a DOM patch
        context.close()


def test_page_reconnects_and_reloads_after_a_gateway_restart(
    canvas_app: Callable[..., Quart], root: Path, live_server: Callable, poll: Callable[..., None],
    browser: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (root / "index.html").write_text(page_html("before restart"))
    port = kernel.testing.free_port()
    monkeypatch.setattr(kernel.testing, "free_port", lambda: port)  # the restarted gateway keeps its port
    config = {"kernel": {"shutdown_grace_seconds": 0.2}}
    first = canvas_app(config)
    with live_server(first) as base:
        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(f"{base}{MOUNT}/?token={TEST_TOKEN}")
        assert page.text_content("#v") == "before restart"
        poll(lambda: first.extensions[EXTENSION_KEY].hub.clients == 1, what="the first socket")
    # Down: the page's socket is gone; change the file while nobody is watching.
    (root / "index.html").write_text(page_html("after restart"))
    second = canvas_app(config)
    with live_server(second) as base2:
        assert base2 == base
        # Same state dir, so the same cookie key: the old cookie still opens the socket.
        page.wait_for_function(shows("after restart"), timeout=15000)
        poll(lambda: second.extensions[EXTENSION_KEY].hub.clients == 1, what="the reconnected socket")
        context.close()
