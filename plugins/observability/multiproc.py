"""``/metrics`` when several worker processes share one port (``kernel serve --workers N``).

A scraper reaches whichever worker accepts its connection, so each worker's own figures
would be a random fraction of the server's. ``kernel serve --workers N`` therefore sets
``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder per server, emptied when it starts, see
:mod:`kernel.workers`) before the workers start, which puts prometheus_client in its
multiprocess mode: its own instruments write their values to memory-mapped files there
(one per process and type), and the parent marks an exited worker dead. Here:

* the plugin's lock-free instruments (:mod:`plugins.observability.instruments`, plain
  numbers on the event loop: the hot path stays as it is) are copied into this worker's
  files by :meth:`MultiprocessExport.flush`, through prometheus_client's own multiprocess
  value class (the same files its instruments use, so nothing clashes): every
  ``FLUSH_SECONDS``, before every scrape this worker answers, and when it stops. A
  scrape therefore shows this worker's figures as of now and the others' as of their
  last flush (at most ``FLUSH_SECONDS`` old);
* gauges (runs in flight, open streams, queue depth) are written with the ``livesum``
  mode: summed over the workers alive;
* ``/metrics`` answers with prometheus_client's ``MultiProcessCollector``, which sums
  every worker's files (counters and histograms of exited workers included, so totals
  never go backwards).

Without the variable (one process) nothing here runs and ``/metrics`` is the app's own
registry, as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from plugins.observability.metrics import Metrics

log = logging.getLogger("plugins.observability")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS = 1.0
GAUGE_MODE = "livesum"


def multiprocess_dir() -> str | None:
    """The multiprocess folder when this process is one of several workers, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client chose its value class when first imported, before the variable was set.
        log.warning("%s is set but prometheus_client was imported before it: /metrics shows this process only",
                    MULTIPROC_ENV)
        return None
    return path


class MultiprocessExport:
    """Copies the plugin's own instruments into this process's multiprocess files, and
    renders ``/metrics`` from every process's files."""

    def __init__(self, metrics: Metrics, path: str, value_class: Callable[..., Any] | None = None) -> None:
        self.registry = metrics.registry
        # prometheus_client's own instruments write their files themselves.
        self.native = {family.name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)
                       for family in m.describe()}
        self.value_class = value_class or values.ValueClass
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self.exposition = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(self.exposition, path)
        self._task: asyncio.Task[None] | None = None
        self.before_flush: Callable[[], None] | None = None

    def render(self) -> bytes:
        """The text format summed over every worker (this one flushed first)."""
        self.flush()
        return generate_latest(self.exposition)

    def flush(self) -> None:
        """Write this process's current values (absolute, so a flush is idempotent)."""
        if self.before_flush is not None:
            self.before_flush()
        for family in self.registry.collect():
            if family.name in self.native:
                continue
            if family.type == "histogram":
                self._histogram(family)
            elif family.type in ("counter", "gauge"):
                for sample in family.samples:
                    if not sample.name.endswith("_created"):
                        self._set(family, sample.name, sample.labels, sample.value)

    def _histogram(self, family: Any) -> None:
        # The files hold a count per bucket (what prometheus_client's Histogram writes); the
        # collector adds them up again (cumulative buckets, and _count from +Inf).
        below: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                series = tuple((k, v) for k, v in sample.labels.items() if k != "le")
                self._set(family, sample.name, sample.labels, sample.value - below.get(series, 0.0))
                below[series] = sample.value
            elif sample.name.endswith("_sum"):
                self._set(family, sample.name, sample.labels, sample.value)

    def _set(self, family: Any, name: str, labels: dict[str, str], value: float) -> None:
        key = (name, tuple(labels.items()))
        found = self._values.get(key)
        if found is None:
            found = self._values[key] = self.value_class(
                family.type, family.name, name, tuple(labels), tuple(labels.values()), family.documentation,
                multiprocess_mode=GAUGE_MODE)
        found.set(value)

    def start(self) -> None:
        """Flush every ``FLUSH_SECONDS`` until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._periodically(), name="metrics-flush")

    async def stop(self) -> None:
        """Stop flushing; write the last values."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self.flush()

    async def _periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # tried again next time
                log.exception("could not write this worker's metrics to %s", os.environ.get(MULTIPROC_ENV))
