"""The canvas host's runtime state: root folder, auth, live-reload hub and watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.auth import DEFAULT_PRINCIPAL, bearer_token, is_loopback_host
from kernel.errors import ConfigError
from plugins.canvas_host.content import reload_script
from plugins.canvas_host.fs import INDEX_FILE
from plugins.canvas_host.livereload import ReloadHub, Watcher
from plugins.canvas_host.pages import demo_index
from plugins.canvas_host.session import COOKIE_NAME, CookieSessions, load_or_create_key
from plugins.canvas_host.settings import CanvasSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.canvas_host")

PLUGIN_NAME = "canvas_host"
EXTENSION_KEY = "canvas_host"
ANONYMOUS = "anonymous"
# How often open sockets check whether the gateway has begun to stop.


def root_path(kernel: Kernel, settings: CanvasSettings) -> Path:
    """The configured root, absolute (relative paths start at plugins.toml's folder)."""
    if settings.root is None:
        return kernel.state_dir / "canvas"
    p = Path(settings.root).expanduser()
    return p if p.is_absolute() else kernel.settings.path.parent / p


class CanvasHost:
    """Everything the canvas views share. One per app, stored in ``app.extensions``."""

    def __init__(self, kernel: Kernel, settings: CanvasSettings) -> None:
        self.kernel = kernel
        self.settings = settings
        self.mount = settings.mount
        self.prefix: tuple[str, ...] = tuple(settings.mount.split("/")[1:])
        self.configured_root = root_path(kernel, settings)
        self._root: Path | None = None
        self.hub = ReloadHub()
        self.watcher: Watcher | None = None
        self._closer: asyncio.Task[None] | None = None
        self.script = reload_script(settings.mount) if settings.live_reload else b""
        self.sessions = CookieSessions(self._secret_for, lambda: load_or_create_key(kernel.state_dir))
        if settings.auth == "none":
            host = kernel.settings.kernel.host
            if not is_loopback_host(host):
                raise ConfigError(
                    f"{kernel.settings.path}: [plugins.{PLUGIN_NAME}] auth = \"none\" is only allowed when the "
                    f"gateway binds a loopback address, but [kernel] host = {host!r}; use auth = \"token\" "
                    f"or host = \"127.0.0.1\""
                )

    # ------------------------------------------------------------------ root

    @property
    def root(self) -> Path:
        """The root, resolved once (created with a demo page when it does not exist)."""
        if self._root is None:
            self._root = self.prepare_root()
        return self._root

    def prepare_root(self) -> Path:
        """Create the root with a demo ``index.html`` when missing; return its real path."""
        root = self.configured_root
        where = f"{self.kernel.settings.path}: [plugins.{PLUGIN_NAME}] root = {str(root)!r}"
        try:
            if not root.exists():
                root.mkdir(parents=True, exist_ok=True)
                index = root / INDEX_FILE
                with contextlib.suppress(FileExistsError):
                    fd = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        fh.write(demo_index(self.mount))
                log.info("canvas: created %s with a demo index.html", root)
            real = root.resolve()
        except OSError as exc:
            raise ConfigError(f"{where} cannot be created: {exc.strerror or exc}") from exc
        if not real.is_dir():
            raise ConfigError(f"{where} is not a directory")
        return real

    # ------------------------------------------------------------------ auth

    def _secret_for(self, principal: str) -> str | None:
        if principal == DEFAULT_PRINCIPAL:
            return self.kernel.auth.main_secret
        key = self.kernel.settings.kernel.auth.keys.get(principal)
        return key.secret if key is not None else None

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        """The principal behind a bearer header or a canvas cookie, else None.

        With ``auth = "none"`` everyone is :data:`ANONYMOUS`.
        """
        if self.settings.auth == "none":
            return ANONYMOUS
        principal = self.kernel.auth.principal_for(bearer_token(headers.get("authorization")))
        if principal is not None:
            return principal
        return self.sessions.principal_for(cookies.get(COOKIE_NAME))

    def open_off_loopback(self, scope: dict) -> bool:
        """True when ``auth = "none"`` and this request came in on a non-loopback socket.

        ``auth = "none"`` is checked against ``[kernel] host`` at start; this catches a
        ``kernel serve --host`` override too.
        """
        if self.settings.auth != "none":
            return False
        server = scope.get("server")
        return bool(server) and not is_loopback_host(str(server[0]))

    # ------------------------------------------------------------------ lifecycle

    async def _close_sockets_when_stopping(self) -> None:
        # Hypercorn waits up to the grace period for open connections before the
        # shutdown hooks run, and a live-reload socket never ends by itself: without
        # this, one open tab holds every shutdown for the whole grace period and its
        # socket is then cut off with 1011 instead of closed with 1001 (going away).
        await self.kernel.shutting_down.wait()
        if self.hub.clients:
            log.info("canvas: gateway stopping; closing %d live-reload socket(s)", self.hub.clients)
        self.hub.close()

    async def start(self) -> None:
        """Prepare the root and start the watcher (when live reload is on)."""
        root = self.root
        if self.settings.live_reload:
            self.watcher = Watcher(root, self.hub, self.settings.debounce_ms)
            self.watcher.start()
            self._closer = asyncio.create_task(self._close_sockets_when_stopping(), name="canvas-socket-closer")
        how = "open it once with ?token=<gateway token>" if self.settings.auth == "token" else "no auth, loopback only"
        log.info("canvas: serving %s at %s/ (%s; live reload %s)", root, self.mount, how,
                 "on" if self.settings.live_reload else "off")

    async def stop(self) -> None:
        """Stop the watcher and close every live-reload socket."""
        if self._closer is not None:
            self._closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer
            self._closer = None
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        self.hub.close()
