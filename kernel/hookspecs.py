"""Every hook the kernel calls, grouped by phase.

pluggy is synchronous, so hooks compose the application at startup; request-time
work happens in Quart views and the kernel's async services. Implement a hook with
``@kernel.hookimpl`` in a module listed under the ``kernel.plugins`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel
    from quart import Blueprint

    from kernel.providers import ProviderKind
    from kernel.runtime import Kernel
    from kernel.store import Schema
    from kernel.tools import ToolKind

hookspec = pluggy.HookspecMarker("kernel")

# --------------------------------------------------------------------------- configuration


@hookspec
def register_settings() -> type[BaseModel] | None:
    """Return the pydantic model for this plugin's ``[plugins.NAME]`` options.

    Called once per plugin while plugins.toml is validated, before the app exists.
    The kernel strips ``enabled`` and validates the rest of the table against the
    model (unknown keys are errors, so give the model ``extra="forbid"``). The
    validated instance is passed to :func:`register_routes` and is available as
    ``kernel.plugin_settings(NAME)``. Return ``None`` when the plugin has no options.
    """


# --------------------------------------------------------------------------- composition


@hookspec
def register_providers() -> list[ProviderKind] | None:
    """Return the model provider kinds this plugin adds.

    Called once at startup. Each :class:`kernel.providers.ProviderKind` names a kind
    (``echo``, ``openai_upstream`` ...), the pydantic model for a ``[providers.NAME]``
    table of that kind, and a factory building a :class:`kernel.types.Provider`.
    """


@hookspec
def register_migrations() -> list[Schema] | None:
    """Return the versioned schemas (tables and their migrations) this plugin keeps in the store.

    Called once when the kernel is built. Each :class:`kernel.store.Schema` is a
    namespace (use the plugin's name) with numbered :class:`kernel.store.Migration`
    steps, written in the store's portable SQL. The kernel applies pending versions at
    startup under the store's migration lock, before any ``startup`` hook runs, and
    ``kernel store migrate`` / ``kernel store status`` act on them offline. A plugin
    never imports a database driver: it reads and writes through ``kernel.store``.
    """


@hookspec
def register_tools() -> list[ToolKind] | None:
    """Return the server-side tool kinds this plugin adds.

    Called once at startup. Each :class:`kernel.tools.ToolKind` names a kind (``mcp``
    ...), the pydantic model for a ``[tools.NAME]`` table of that kind, and a factory
    building a :class:`kernel.tools.ToolSet` (list tools, call one). Agents name the
    tables they use (``[agents.NAME] tools = [...]``); the kernel's agent loop runs the
    calls. A kind with ``request_type`` also builds tool sets a request brings in its
    ``tools`` (e.g. ``{"type": "mcp", ...}`` on ``/v1/responses``).
    """


@hookspec
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint] | None:
    """Return the Quart blueprints this plugin serves.

    Called once per plugin while the app is built, with the plugin's own validated
    settings (``None`` when it registered none). Views are public only when wrapped
    with :func:`kernel.auth.public`; everything else requires the gateway secret.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``kernel`` command-line group.

    Called when the CLI starts, for every *enabled* plugin. Use ``@cli.command()``.
    """


@hookspec(firstresult=True)
def authenticate_request(kernel: Kernel, headers: Any, method: str, websocket: bool,
                         query: Mapping[str, str]) -> str | None:
    """Name the principal of a request that carries no ``Authorization`` header.

    Called for every request to a non-public route without a bearer secret (a request
    with a wrong bearer secret is refused without asking). Return the principal (a key
    name from ``[kernel.auth.keys]`` or ``default``) to let the request in as that
    principal, or ``None`` to pass (the request is then refused with 401). Raise
    :class:`kernel.ApiError` to refuse with a precise reason (e.g. a browser session
    without its CSRF token). The first non-None answer wins. ``websocket`` is True for
    WebSocket upgrades (``method`` is then ``GET``). ``query`` holds a WebSocket upgrade's
    query parameters (a browser can set no header on an upgrade, so a short-lived ticket
    travels there; the kernel never logs query strings); it is empty for HTTP requests,
    whose secrets belong in headers.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def startup(kernel: Kernel) -> Awaitable[None] | None:
    """Called after the app is built, before the first request is served.

    Return an awaitable (e.g. a coroutine) to run async setup; the kernel awaits each
    plugin's in registration order. Raising stops the server with the error.
    """


@hookspec
def shutdown(kernel: Kernel) -> Awaitable[None] | None:
    """Called once when the server stops, after open streams drained or were cancelled.

    Return an awaitable for async cleanup; awaited in reverse registration order.
    """


# --------------------------------------------------------------------------- feature hooks


@hookspec
def transform_hook_payload(
    hook_name: str, payload: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any] | None:
    """Rewrite or drop an incoming webhook payload (called by the ``hooks`` plugin).

    Called for every authenticated, rate-admitted request to a mapped hook
    (``POST <base_path>/<name>``, not the built-in ``wake`` and ``agent``), before a
    mapping is chosen, in plugin registration order, each implementation receiving the
    previous one's result. Return the payload (changed or not) to continue, or ``None``
    to drop the request (the hook answers 204). An implementation may also return an
    awaitable resolving to either; the hooks plugin awaits it. Raising, or returning
    anything but a dict or None, answers 500 (``code: "transform_failed"``).

    ``headers`` is a copy of the request headers with lower-cased names (repeated
    headers joined with ``", "``), without the ones that carry credentials:
    ``authorization``, ``proxy-authorization``, ``cookie``, ``set-cookie`` and
    ``x-hook-token``.
    """
