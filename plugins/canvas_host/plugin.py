"""Hook implementations of the canvas host: serve an agent-written folder with live reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from quart import Blueprint

from kernel import hookimpl
from plugins.canvas_host.host import EXTENSION_KEY, CanvasHost
from plugins.canvas_host.routes import build_blueprint
from plugins.canvas_host.settings import CanvasSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel


@hookimpl
def register_settings() -> type[BaseModel]:
    return CanvasSettings


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    """Build the host (refusing ``auth = "none"`` off loopback) and its blueprint."""
    assert isinstance(settings, CanvasSettings)
    host = CanvasHost(kernel, settings)
    assert kernel.app is not None
    kernel.app.extensions[EXTENSION_KEY] = host
    return [build_blueprint(host)]


def _host(kernel: Kernel) -> CanvasHost | None:
    return kernel.app.extensions.get(EXTENSION_KEY) if kernel.app is not None else None


@hookimpl
async def startup(kernel: Kernel) -> None:
    """Create the root if needed and start watching it."""
    host = _host(kernel)
    if host is not None:
        await host.start()


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    """Stop the watcher and close open live-reload sockets."""
    host = _host(kernel)
    if host is not None:
        await host.stop()
