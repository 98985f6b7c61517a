"""``create_app(settings)``: the Quart app, auth, error bodies, and plugin blueprints."""

from __future__ import annotations

import gc
import importlib.metadata as md
import inspect
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from quart import Quart, Response, g, has_request_context, jsonify, request, websocket
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from kernel.auth import bearer_token, is_public, public
from kernel.config import Settings
from kernel.errors import ApiError, default_type, error_body
from kernel.http import drain_unread_body
from kernel.observe import SCOPE_KEY as OBSERVE_SCOPE_KEY
from kernel.observe import ObserveMiddleware
from kernel.plugins import load_plugins, per_plugin
from kernel.runtime import Kernel
from kernel.streaming import ResponseWatch

log = logging.getLogger("kernel.http")
access_log = logging.getLogger("kernel.access")

KERNEL_OWNER = "kernel"
MAX_REQUEST_ID_LENGTH = 128


def create_app(
    settings: Settings,
    *,
    extra_plugins: dict[str, object] | None = None,
    entry_points: dict[str, md.EntryPoint] | None = None,
) -> Quart:
    """Build the app: load enabled plugins, collect their routes, wire auth and errors.

    ``extra_plugins`` registers plugin objects in-process (for tests); ``entry_points``
    replaces discovery (for tests that fake installed plugins).
    """
    loaded = load_plugins(settings, entry_points=entry_points, extra=extra_plugins)
    kernel = Kernel(settings, loaded)
    app = Quart("kernel")
    app.config["MAX_CONTENT_LENGTH"] = None  # endpoints enforce their own limits while reading
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["RESPONSE_TIMEOUT"] = None  # long agent runs stream for minutes
    app.extensions["kernel"] = kernel
    kernel.app = app
    app.config["KERNEL_ROUTE_OWNERS"] = owners = {}

    _register_kernel_routes(app, kernel)
    for plugin_name, impl in per_plugin(kernel.pm, "register_routes"):
        for bp in impl(kernel=kernel, settings=kernel.plugin_settings(plugin_name)) or []:
            app.register_blueprint(bp)
            owners[bp.name] = plugin_name
    for rule in app.url_map.iter_rules():
        owner = owners.get(rule.endpoint.rpartition(".")[0], KERNEL_OWNER)
        if owner in kernel.plugins:
            kernel.plugins[owner].routes.append({"methods": _methods_label(rule), "path": rule.rule})

    _install_request_hooks(app, kernel)
    _install_error_handlers(app)
    _install_lifecycle(app, kernel)
    # With observers, one wrapper watches the response for both jobs (see kernel.observe).
    app.asgi_app = (ObserveMiddleware(app.asgi_app, kernel.observers) if kernel.observers  # type: ignore[method-assign]
                    else ResponseWatch(app.asgi_app))
    kernel.warn_unenforced_limits()
    return app


def get_kernel(app: Quart) -> Kernel:
    """The kernel behind an app built by :func:`create_app`."""
    return app.extensions["kernel"]


def route_table(app: Quart) -> list[dict[str, str]]:
    """Every route with its methods and owning plugin (``kernel`` for the kernel's own)."""
    owners: dict[str, str] = app.config["KERNEL_ROUTE_OWNERS"]
    rows = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        rows.append({
            "methods": _methods_label(rule),
            "path": rule.rule,
            "plugin": owners.get(rule.endpoint.rpartition(".")[0], KERNEL_OWNER),
        })
    return sorted(rows, key=lambda r: (r["path"], r["methods"]))


def _methods_label(rule: Any) -> str:
    """``GET,POST`` for HTTP rules; ``WS`` for WebSocket rules (Quart marks them ``websocket``)."""
    if getattr(rule, "websocket", False):
        return "WS"
    return ",".join(sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS")))


# --------------------------------------------------------------------------- kernel routes


def _register_kernel_routes(app: Quart, kernel: Kernel) -> None:
    @public
    async def health() -> Any:
        return jsonify({"status": "ok"})

    async def plugins() -> Any:
        return jsonify({"object": "list", "data": [r.as_dict() for r in sorted(
            kernel.plugins.values(), key=lambda r: r.name)]})

    app.add_url_rule("/-/health", "kernel_health", health, methods=["GET"])
    app.add_url_rule("/-/plugins", "kernel_plugins", plugins, methods=["GET"])
    app.static_folder = None


# --------------------------------------------------------------------------- per request


def authenticated_principal(kernel: Kernel, headers: Any, method: str = "GET", *, websocket: bool = False,
                            query: Mapping[str, str] | None = None) -> str:
    """The principal of the request's bearer secret; 401 when it is missing or wrong.

    Without an ``Authorization`` header, plugins' ``authenticate_request`` hooks may
    name the principal (the console's browser session cookie does; on a WebSocket
    upgrade, with the short-lived ticket in ``query``).
    """
    header = headers.get("authorization")
    principal = kernel.auth.principal_for(bearer_token(header))
    if principal is None and header is None:
        principal = kernel.pm.hook.authenticate_request(kernel=kernel, headers=headers, method=method,
                                                        websocket=websocket, query=query or {})
        if principal is not None and not kernel.auth.knows(principal):
            principal = None
    if principal is None:
        raise ApiError(
            401,
            "missing or invalid bearer secret; send 'Authorization: Bearer <token>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="kernel"'},
        )
    return principal


def _install_request_hooks(app: Quart, kernel: Kernel) -> None:
    owners: dict[str, str] = app.config["KERNEL_ROUTE_OWNERS"]

    @app.before_request
    async def identify_and_authenticate() -> None:
        # The request object itself, once: each use of the ``request`` proxy is a lookup.
        req = request._get_current_object()  # type: ignore[attr-defined]
        headers = req.headers
        g.started = time.perf_counter()
        given = headers.get("x-request-id", "")
        g.request_id = given if 0 < len(given) <= MAX_REQUEST_ID_LENGTH and given.isprintable() else (
            f"req_{uuid.uuid4().hex}")
        g.principal = None
        endpoint = req.endpoint
        view = app.view_functions.get(endpoint) if endpoint else None
        info = req.scope.get(OBSERVE_SCOPE_KEY)
        if info is not None:  # observers see the route even when authentication fails
            rule = req.url_rule
            info.route = rule.rule if rule is not None else ""
            info.plugin = owners.get(rule.endpoint.rpartition(".")[0], KERNEL_OWNER) if rule is not None else ""
            info.headers = headers
        if view is not None and not is_public(view):
            g.principal = authenticated_principal(kernel, headers, req.method)
        if info is not None:
            info.principal = g.principal
            observers = kernel.observers
            if observers.prepares:  # e.g. a quota counted in a shared store: one round trip
                await observers.prepare_request(info)
            observers.request_started(info)  # may refuse with an ApiError (a quota)

    @app.before_websocket
    async def authenticate_websocket() -> None:
        # Same rule as HTTP: a socket is open only with the gateway secret unless its
        # view is marked @public (and then does its own checks, like the canvas cookie).
        g.principal = None
        view = app.view_functions.get(websocket.endpoint) if websocket.endpoint else None
        if view is None or is_public(view):
            return
        g.principal = authenticated_principal(kernel, websocket.headers, websocket=True, query=websocket.args)

    @app.after_request
    async def stamp_and_log(response: Response) -> Response:
        if not await drain_unread_body():
            # Unread bytes remain on the connection: it cannot carry another request.
            response.headers["Connection"] = "close"
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers["x-request-id"] = request_id
        info = request.scope.get(OBSERVE_SCOPE_KEY)
        if info is not None:
            kernel.observers.response_headers(info, response.headers)
        if kernel.settings.kernel.access_log:
            elapsed = (time.perf_counter() - getattr(g, "started", time.perf_counter())) * 1000
            # Path only: query strings can carry tokens, and bodies are never logged.
            access_log.info(
                '%s "%s %s" %s %.1fms principal=%s', request_id, request.method, request.path,
                response.status_code, elapsed, getattr(g, "principal", None) or "-",
            )
        return response


def _method_and_path() -> tuple[str, str]:
    """What the failing exchange asked for: an HTTP request, or a WebSocket upgrade.

    Error handlers also run for upgrades (a WebSocket to an HTTP-only path is a routing
    error raised in the websocket context), where touching ``request`` would raise.
    """
    if has_request_context():
        return request.method, request.path
    return "GET(websocket)", websocket.path


def _install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Any:
        if exc.status >= 500:
            method, path = _method_and_path()
            log.error("%s: %s %s -> %s: %s", getattr(g, "request_id", "-"), method, path, exc.status,
                      exc.message)
        return jsonify(exc.body()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        headers: dict[str, str] = {}
        message = exc.description or exc.name
        method, path = _method_and_path()
        if status == 404:
            message = f"no route for {method} {path}"
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            message = f"method {method} is not allowed on {path}; allowed: {headers['Allow']}"
        body = error_body(message, type=default_type(status), code=exc.name.lower().replace(" ", "_"))
        return jsonify(body), status, headers

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Any:
        method, path = _method_and_path()
        log.exception("%s: unhandled error in %s %s", getattr(g, "request_id", "-"), method, path)
        body = error_body(
            f"internal server error (request id {getattr(g, 'request_id', '-')})", type="server_error",
            code="internal_error",
        )
        return jsonify(body), 500


_gc_settled = False


def _settle_garbage_collector() -> None:
    """Tune the cyclic GC for a long-running server once startup has built everything.

    Everything alive now (modules, plugins, the loaded model's wrappers) lives as long as
    the process: ``gc.freeze()`` moves it out of the collector's scans. Requests allocate
    hundreds of short-lived objects each (events, dicts of the wire format), so young
    collections at the default threshold of 700 ran several times per request; a higher
    threshold measured +0.04 on the kernel/bare request-rate ratio (bench_responses.py).
    """
    global _gc_settled
    if _gc_settled:  # once per process: apps built later (tests) would freeze their garbage
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _install_lifecycle(app: Quart, kernel: Kernel) -> None:
    @app.before_serving
    async def start() -> None:
        try:
            await kernel.start()
            for plugin_name, impl in per_plugin(kernel.pm, "startup"):
                try:
                    result = impl(kernel=kernel)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    raise RuntimeError(f"plugin {plugin_name!r} failed to start: {exc}") from exc
            _settle_garbage_collector()
        except BaseException:
            # A failed start never reaches after_serving: close what did open, or the
            # store's worker thread keeps the process alive after the error is shown.
            try:
                await kernel.stop()
            except Exception:
                log.exception("cleanup after a failed start failed")
            raise

    @app.after_serving
    async def stop() -> None:
        # Runs drain first so plugins still have their services while streams finish.
        await kernel.runs.drain(kernel.grace_remaining())
        for plugin_name, impl in reversed(per_plugin(kernel.pm, "shutdown")):
            try:
                result = impl(kernel=kernel)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r failed to shut down", plugin_name)
        await kernel.stop()
