"""Serve the app with Hypercorn: bind, refuse unsafe binds, shut down gracefully."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import signal
from typing import Any

# worker_serve (what hypercorn.asyncio.serve wraps) because it takes sockets bound by us.
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app
from quart import Quart

from kernel import connections
from kernel.app import get_kernel
from kernel.auth import is_loopback_host
from kernel.config import KernelSettings
from kernel.memory import heap_keeper

log = logging.getLogger("kernel")


class UnsafeBindError(Exception):
    """Binding a non-loopback address without a configured secret."""


def check_bind(app: Quart, host: str) -> None:
    """Refuse to expose the gateway beyond this machine without a configured secret."""
    kernel = get_kernel(app)
    if not is_loopback_host(host) and not kernel.auth.has_configured_secret:
        raise UnsafeBindError(
            f"refusing to bind {host}: it is not a loopback address and no auth secret is "
            f"configured; set [kernel.auth] token = \"${{KERNEL_TOKEN}}\" in {kernel.settings.path}"
        )


class PortInUseError(Exception):
    """The port is taken: ``kernel serve`` says so in one line and exits non-zero."""


def hypercorn_config(host: str, port: int, grace: float, limits: KernelSettings | None = None) -> HypercornConfig:
    """Hypercorn's config for one bind, its connections held to ``limits`` (defaults if None)."""
    limits = limits or KernelSettings()
    cfg = HypercornConfig()
    cfg.backlog = limits.backlog
    cfg.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    cfg.graceful_timeout = grace
    cfg.accesslog = None  # the kernel writes its own access line (with request ids, no secrets)
    # A Logger (not the default "-") so Hypercorn's messages go through logging once,
    # formatted like the kernel's, instead of through a second stderr handler.
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.keep_alive_timeout = limits.keep_alive_timeout_seconds
    connections.install(cfg, connections.ConnectionGuard(
        max_connections=connections.connection_cap(limits.max_connections, open_files_limit()),
        header_timeout=limits.header_timeout_seconds,
        keep_alive_timeout=limits.keep_alive_timeout_seconds,
    ))
    return cfg


def announce_token(app: Quart, host: str, port: int) -> None:
    """Print a freshly generated token once, with a ready-to-paste curl command."""
    kernel = get_kernel(app)
    if kernel.auth.generated:
        token = kernel.auth.main_secret
        shown = f"[{host}]" if ":" in host else host
        print(
            f"Generated an access token (saved to {kernel.state_dir / 'token'}, mode 0600):\n"
            f"  {token}\n"
            f"Try it:\n"
            f"  curl -H 'Authorization: Bearer {token}' http://{shown}:{port}/-/plugins\n",
            flush=True,
        )


# What asyncio's accept loop reports when accept() fails for lack of descriptors or memory
# (EMFILE, ENFILE, ENOBUFS, ENOMEM); it retries every second, and so would the log line.
ACCEPT_FAILED_MESSAGE = "socket.accept() out of system resource"
_accept_failures = connections.ThrottledLog(log)


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    # Python < 3.12.1 logs a cancelled connection task at shutdown as an ERROR with a
    # traceback (CPython gh-113538); a connection cancelled at shutdown is not an error.
    if isinstance(exc, asyncio.CancelledError):
        log.debug("ignored at shutdown: %s", context.get("message"))
        return
    if context.get("message") == ACCEPT_FAILED_MESSAGE:
        _accept_failures.warning("accept", "cannot accept connections: %s (lower [kernel] max_connections "
                                 "or raise the open-files limit)", exc)
        return
    loop.default_exception_handler(context)


def bind_sockets(config: HypercornConfig, port: int) -> Sockets:
    try:
        return config.create_sockets()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} is in use") from None
        raise


def raise_open_files_limit() -> None:
    """Soft open-files limit up to the hard one: each client connection costs a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %s to %s: %s", soft, hard, exc)
            return
        log.info("open-files limit raised from %s to %s", soft, hard)


def open_files_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


async def serve(app: Quart, host: str, port: int, sockets: Sockets | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then drain: streams get the grace period to finish.

    ``sockets``: already bound (a worker of ``--workers N``, bound by the parent)."""
    check_bind(app, host)
    kernel = get_kernel(app)
    grace = kernel.settings.kernel.shutdown_grace_seconds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception_handler)

    def on_signal() -> None:
        kernel.begin_shutdown()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    raise_open_files_limit()
    config = hypercorn_config(host, port, grace, kernel.settings.kernel)
    # Bind before Hypercorn runs the app's startup: a busy port then fails at once, before
    # plugins start threads that would keep a failed process alive (it used to hang).
    if sockets is None:
        sockets = bind_sockets(config, port)
    guard = connections.guard_of(config)
    if guard is not None and guard.max_connections < kernel.settings.kernel.max_connections:
        log.warning("max_connections lowered from %s to %s to stay within the open-files limit (%s)",
                    kernel.settings.kernel.max_connections, guard.max_connections, open_files_limit())
    announce_token(app, host, port)
    log.info("serving on http://%s:%s (plugins: %s)", host, port,
             ", ".join(sorted(n for n, r in kernel.plugins.items() if r.enabled)) or "none")
    async with heap_keeper():
        await worker_serve(wrap_app(app, config.wsgi_max_body_size, None), config, sockets=sockets,
                           shutdown_trigger=stop.wait)
    log.info("stopped")
