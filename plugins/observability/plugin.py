"""Hook implementations of the ``observability`` plugin."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

import click
from quart import Blueprint

from kernel import hookimpl
from kernel.store import Schema
from plugins.observability.ledger import SCHEMA
from plugins.observability.metrics import Metrics
from plugins.observability.multiproc import MultiprocessExport, multiprocess_dir
from plugins.observability.observer import ObservabilityObserver
from plugins.observability.quotas import Quotas, period_bounds
from plugins.observability.routes import blueprint
from plugins.observability.settings import ObservabilitySettings
from plugins.observability.shared_quotas import QuotaSync, SharedQuotas
from plugins.observability.usage import SqlUsageStore

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.observability")
# Each kernel's metrics export to the workers' shared folder (only with --workers N).
_EXPORTS: weakref.WeakKeyDictionary[Kernel, MultiprocessExport] = weakref.WeakKeyDictionary()


@hookimpl
def register_settings() -> type[ObservabilitySettings]:
    """Options of ``[plugins.observability]``."""
    return ObservabilitySettings


@hookimpl
def register_migrations() -> list[Schema]:
    """The usage ledger (``usage_runs``) and the shared limits' tables (``quota_keys``, ``quota_slots``)."""
    return [SCHEMA]


@hookimpl
def register_routes(kernel: Kernel, settings: ObservabilitySettings | None) -> list[Blueprint]:
    """Build the observer, add it to the kernel, and serve ``/metrics`` and ``/-/usage``."""
    settings = settings or ObservabilitySettings()
    tracing = None
    if settings.otlp_endpoint:
        from plugins.observability.tracing import Tracing  # OpenTelemetry is imported only when used

        tracing = Tracing(settings, kernel.store.dialect)
    keys = kernel.settings.kernel.auth.keys
    # Several processes may share a PostgreSQL store: limits are counted there (shared_quotas).
    quotas = SharedQuotas(keys, kernel.store, kernel.leases) if kernel.store.shared else Quotas(keys)
    observer = ObservabilityObserver(
        metrics=Metrics(lambda: kernel.providers),
        quotas=quotas,
        usage=SqlUsageStore(kernel.store, settings.usage_flush_seconds),
        tracing=tracing,
    )
    kernel.observers.add(observer)
    if quotas.shared and quotas.keys:
        kernel.observers.add(QuotaSync(lambda: observer.quotas))
    export = None
    path = multiprocess_dir()  # set by kernel serve --workers N
    if path is not None:
        export = _EXPORTS[kernel] = MultiprocessExport(observer.metrics, path)
        export.before_flush = observer.drain
    return [blueprint(kernel, settings, observer, export)]


def observer_of(kernel: Kernel) -> ObservabilityObserver:
    """This plugin's observer in ``kernel`` (tests use it to reach the clock and exporters)."""
    return next(o for o in kernel.observers if isinstance(o, ObservabilityObserver))


@hookimpl
async def startup(kernel: Kernel) -> None:
    """Open the usage table; budgets start from the tokens already used this period (in memory),
    or from the shared store's counters (made from the usage table when a period starts)."""
    observer = observer_of(kernel)
    await observer.usage.open()
    quotas = observer.quotas
    if isinstance(quotas, SharedQuotas):
        await quotas.start(observer.usage.tokens_since)
    else:
        for principal, period in quotas.budgeted().items():
            _, start, _ = period_bounds(period, quotas.clock())
            quotas.load_budget(principal, await observer.usage.tokens_since(principal, start))
    export = _EXPORTS.get(kernel)
    if export is not None:
        export.start()
    settings = _settings(kernel)
    log.info("observability: /metrics (%s%s), /-/usage; traces %s",
             "public" if settings.metrics_public else "admin only",
             ", summed over the workers" if export is not None else "",
             f"to {settings.otlp_endpoint}" if observer.tracing else "off")


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    """Give back this process's concurrency slots, write the last usage rows and export the last spans."""
    observer = observer_of(kernel)
    try:
        if isinstance(observer.quotas, SharedQuotas):
            await observer.quotas.stop()
        export = _EXPORTS.pop(kernel, None)
        if export is not None:
            await export.stop()  # the last values, for the workers still serving scrapes
        await observer.usage.close()
    finally:
        if observer.tracing is not None:
            observer.tracing.shutdown()


@hookimpl
def register_commands(cli: click.Group) -> None:
    """``kernel usage``."""
    from plugins.observability import cli as commands

    commands.register(cli)


def _settings(kernel: Kernel) -> ObservabilitySettings:
    found = kernel.plugin_settings("observability")
    return found if isinstance(found, ObservabilitySettings) else ObservabilitySettings()
