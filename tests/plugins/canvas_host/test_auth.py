"""Canvas auth: the ?token= -> cookie flow, bearer headers, refusals, and auth = "none"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets.sync.client as ws_client
from quart import Quart
from quart.testing.connections import WebsocketResponseError
from websockets.exceptions import InvalidStatus

from kernel.errors import ConfigError
from kernel.testing import AUTH_HEADERS, TEST_TOKEN
from plugins.canvas_host.session import COOKIE_NAME

MOUNT = "/__kernel__/canvas"
CI_KEY = "ci-key-secret-0123"


async def reload_reaches(app: Quart, sock: Any) -> bool:
    """Once the socket has subscribed, a broadcast arrives on it."""
    hub = app.extensions["canvas_host"].hub
    for _ in range(500):
        if hub.clients:
            break
        await asyncio.sleep(0.01)
    hub.broadcast()
    return await asyncio.wait_for(sock.receive(), 5) == "reload"


def cookie_of(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture
def site(root: Path) -> Path:
    (root / "index.html").write_text("<html><body>home</body></html>")
    (root / "sub").mkdir()
    (root / "sub" / "a b.html").write_text("<body>ab</body>")
    (root / "app.js").write_text("let x = 1;")
    return root


async def test_token_link_sets_a_cookie_and_drops_the_token(
    canvas_app: Callable[..., Quart], site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = canvas_app({"kernel": {"access_log": True}})
    async with app.test_app() as ta:
        client = ta.test_client()
        resp = await client.get(f"{MOUNT}/?token={TEST_TOKEN}&view=big")
        assert resp.status_code == 303
        assert resp.headers["Location"] == f"{MOUNT}/?view=big"
        set_cookie = resp.headers["Set-Cookie"]
        attrs = [a.strip().lower() for a in set_cookie.split(";")]
        assert set_cookie.startswith(f"{COOKIE_NAME}=")
        assert "httponly" in attrs and "samesite=strict" in attrs and f"path={MOUNT}".lower() in attrs
        assert "secure" not in attrs  # plain http here
        value = cookie_of(set_cookie)
        assert TEST_TOKEN not in value and value != TEST_TOKEN
        assert resp.headers["Referrer-Policy"] == "no-referrer"

        # The browser now carries the cookie (and nothing else) for pages and assets.
        headers = {"Cookie": f"{COOKIE_NAME}={value}"}
        page = await client.get(f"{MOUNT}/?view=big", headers=headers)
        assert page.status_code == 200 and b"home" in await page.get_data()
        asset = await client.get(f"{MOUNT}/app.js", headers=headers)
        assert asset.status_code == 200 and await asset.get_data() == b"let x = 1;"

        # A deep link keeps its path (re-encoded) and loses only the token.
        deep = await client.get(f"{MOUNT}/sub/a%20b.html?token={TEST_TOKEN}")
        assert deep.status_code == 303 and deep.headers["Location"] == f"{MOUNT}/sub/a%20b.html"
        bare = await client.get(f"{MOUNT}?token={TEST_TOKEN}")
        assert bare.headers["Location"] == f"{MOUNT}/"

        # The cookie is a canvas credential only: the gateway API does not take it.
        assert (await client.get("/-/plugins", headers=headers)).status_code == 401
    # The access log saw the token request (so it was listening) but not the token.
    assert f'"GET {MOUNT}/" 303' in caplog.text
    assert TEST_TOKEN not in caplog.text


async def test_refusals(canvas_app: Callable[..., Quart], site: Path) -> None:
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        # No credentials: JSON for API clients, a page that explains for browsers.
        resp = await client.get(f"{MOUNT}/app.js")
        assert resp.status_code == 401
        assert (await resp.get_json())["error"]["type"] == "authentication_error"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        page = await client.get(f"{MOUNT}/", headers={"Accept": "text/html,*/*"})
        assert page.status_code == 401 and page.headers["Content-Type"].startswith("text/html")
        text = (await page.get_data()).decode()
        assert f"{MOUNT}/?token=" in text and "home" not in text

        # A wrong token in the link: no cookie, and no retry loop on the page.
        wrong = await client.get(f"{MOUNT}/?token=not-the-token", headers={"Accept": "text/html"})
        assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers
        assert "location.replace" not in (await wrong.get_data()).decode()
        bad_link = await client.get(f"{MOUNT}/?token=")
        assert bad_link.status_code == 401 and (await bad_link.get_json())["error"]["param"] == "token"

        # Wrong bearer, forged and tampered cookies.
        assert (await client.get(f"{MOUNT}/", headers={"Authorization": "Bearer nope"})).status_code == 401
        good = cookie_of((await client.get(f"{MOUNT}/?token={TEST_TOKEN}")).headers["Set-Cookie"])
        for forged in (TEST_TOKEN, "ZGVmYXVsdA.AAAA", good[:-3] + "AAA", good + "x", "garbage"):
            resp = await client.get(f"{MOUNT}/", headers={"Cookie": f"{COOKIE_NAME}={forged}"})
            assert resp.status_code == 401, forged
        # Bearer works on its own.
        assert (await client.get(f"{MOUNT}/app.js", headers=AUTH_HEADERS)).status_code == 200


async def test_secure_cookie_over_https(canvas_app: Callable[..., Quart], site: Path) -> None:
    async with canvas_app().test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/?token={TEST_TOKEN}", scheme="https")
    assert "secure" in [a.strip().lower() for a in resp.headers["Set-Cookie"].split(";")]


async def test_named_keys_and_restarts(canvas_app: Callable[..., Quart], site: Path) -> None:
    keys = {"kernel": {"auth": {"keys": {"ci": {"secret": CI_KEY}}}}}
    async with canvas_app(keys).test_app() as ta:
        client = ta.test_client()
        ci_cookie = cookie_of((await client.get(f"{MOUNT}/?token={CI_KEY}")).headers["Set-Cookie"])
        main_cookie = cookie_of((await client.get(f"{MOUNT}/?token={TEST_TOKEN}")).headers["Set-Cookie"])
        assert ci_cookie != main_cookie
        resp = await client.get(f"{MOUNT}/", headers={"Cookie": f"{COOKIE_NAME}={ci_cookie}"})
        assert resp.status_code == 200
    # A restart (new app, same state dir) keeps sessions alive ...
    async with canvas_app(keys).test_app() as ta:
        client = ta.test_client()
        for value in (ci_cookie, main_cookie):
            assert (await client.get(f"{MOUNT}/", headers={"Cookie": f"{COOKIE_NAME}={value}"})).status_code == 200
    # ... until the secret behind them changes or the key is removed.
    rotated = {"kernel": {"auth": {"token": "a-new-token-987654321", "keys": {}}}}
    async with canvas_app(rotated).test_app() as ta:
        client = ta.test_client()
        for value in (ci_cookie, main_cookie):
            assert (await client.get(f"{MOUNT}/", headers={"Cookie": f"{COOKIE_NAME}={value}"})).status_code == 401


def test_websocket_needs_the_cookie_or_bearer(
    canvas_app: Callable[..., Quart], site: Path, live_server: Callable, raw_http: Callable[..., Any]
) -> None:
    with live_server(canvas_app()) as base:
        ws_url = base.replace("http://", "ws://") + f"{MOUNT}/ws"
        for headers in ({}, {"Cookie": f"{COOKIE_NAME}=forged.value"}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as info:
                ws_client.connect(ws_url, additional_headers=headers, open_timeout=5).close()
            assert info.value.response.status_code == 401, headers
        login = raw_http(base, "GET", f"{MOUNT}/?token={TEST_TOKEN}".encode())
        assert login.status == 303
        cookie = login.headers["set-cookie"].split(";")[0]
        for headers in ({"Cookie": cookie}, AUTH_HEADERS):
            with ws_client.connect(ws_url, additional_headers=headers, open_timeout=5) as sock:
                assert sock.protocol.state.name == "OPEN"


async def test_auth_none_on_loopback(canvas_app: Callable[..., Quart], site: Path, raw_open: Callable) -> None:
    async with canvas_app(auth="none").test_app() as ta:
        client = ta.test_client()
        resp = await client.get(f"{MOUNT}/app.js")
        assert resp.status_code == 200
        # Writes still need the gateway token: they are gateway API, not pages.
        assert (await client.put(f"{MOUNT}/files/x.txt", data=b"x")).status_code == 401
        # A request that came in on a non-loopback socket (say `kernel serve --host 0.0.0.0`) is refused.
        resp = await client.open(f"{MOUNT}/app.js", method="GET", scope_base={"server": ("192.0.2.7", 18789)})
        assert resp.status_code == 403
        with pytest.raises(WebsocketResponseError) as info:
            async with client.websocket(f"{MOUNT}/ws", scope_base={"server": ("192.0.2.7", 18789)}) as sock:
                await sock.receive()
        assert info.value.response.status_code == 403
        # Accepted without credentials on loopback.
        async with client.websocket(f"{MOUNT}/ws", scope_base={"server": ("127.0.0.1", 18789)}) as sock:
            assert await reload_reaches(ta.app, sock)


async def test_token_mode_serves_any_bind(canvas_app: Callable[..., Quart], site: Path) -> None:
    public_bind = {"server": ("192.0.2.7", 18789)}
    async with canvas_app({"kernel": {"host": "0.0.0.0"}}).test_app() as ta:
        client = ta.test_client()
        resp = await client.open(f"{MOUNT}/app.js", method="GET", headers=AUTH_HEADERS, scope_base=public_bind)
        assert resp.status_code == 200
        async with client.websocket(f"{MOUNT}/ws", headers=AUTH_HEADERS, scope_base=public_bind) as sock:
            assert await reload_reaches(ta.app, sock)
        with pytest.raises(WebsocketResponseError) as info:
            async with client.websocket(f"{MOUNT}/ws", scope_base=public_bind) as sock:
                await sock.receive()
        assert info.value.response.status_code == 401


def test_auth_none_is_refused_off_loopback(canvas_app: Callable[..., Quart]) -> None:
    with pytest.raises(ConfigError) as info:
        canvas_app({"kernel": {"host": "0.0.0.0"}}, auth="none")
    message = str(info.value)
    assert "[plugins.canvas_host]" in message and "auth = \"none\"" in message and "0.0.0.0" in message
    # Token mode is fine on any bind.
    canvas_app({"kernel": {"host": "0.0.0.0"}})


def test_unknown_and_bad_options_are_config_errors(canvas_app: Callable[..., Quart]) -> None:
    for options, needle in (({"bogus": 1}, "bogus"), ({"auth": "open"}, "auth"), ({"mount": "canvas/"}, "mount"),
                            ({"mount": "/a/../b"}, "mount"), ({"max_file_bytes": 0}, "max_file_bytes"),
                            ({"max_file_bytes": 2 * 1024**3}, "max_file_bytes"), ({"debounce_ms": 0}, "debounce_ms"),
                            ({"debounce_ms": 60_000}, "debounce_ms")):
        with pytest.raises(ConfigError) as info:
            canvas_app(**options)
        assert needle in str(info.value), options
