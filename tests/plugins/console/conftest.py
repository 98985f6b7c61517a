"""A console server shared by a module: echo agents, two named keys, the openresponses plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.testing import TEST_TOKEN, build_app, default_config, merge, serve_in_thread

ALICE_SECRET = "alice-secret-0123456789"
BOB_SECRET = "bob-secret-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

CONSOLE_CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"alice": {"secret": ALICE_SECRET}, "bob": {"secret": BOB_SECRET}}}},
    "plugins": {"openresponses": {"enabled": True}, "console": {"enabled": True, "runs_refresh_seconds": 0.5,
                                                                 "websocket_ticket_seconds": 3}},
    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.5}},
    "agents": {"main": {"provider": "echo", "description": "echoes your words"}, "slow": {"provider": "slow"}},
}


class Console:
    """A running gateway with the console; ``client(secret)`` is an httpx client for a key."""

    def __init__(self, base: str, app: Any) -> None:
        self.base = base
        self.app = app
        self.kernel = app.extensions["kernel"]

    def client(self, secret: str = TEST_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {secret}"}, timeout=30)

    def sign_in(self, secret: str) -> httpx.Client:
        """A cookie-only client (no bearer) signed in through the form, like a browser."""
        http = httpx.Client(base_url=self.base, timeout=30)
        form = http.get("/console/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        done = http.post("/console/login", data={"csrf": token, "secret": secret})
        assert done.status_code == 303, done.text
        return http


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp: Path = tmp_path_factory.mktemp("console")
    app = build_app(merge(default_config(tmp / "state"), CONSOLE_CONFIG), tmp / "plugins.toml")
    with serve_in_thread(app) as base:
        yield Console(base, app)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium'); the browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
