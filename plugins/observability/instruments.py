"""Lock-free counters, gauges and histograms for the per-request hot path.

prometheus_client's own instruments take a lock and validate on every ``inc`` and
``observe`` (they are built for threads); a request here updates about twenty of them,
which measured ~8% of the gateway's CPU per echo request. Every update here happens
on the event loop thread (observers are called there, and so is the /metrics view
that reads them), so plain attribute arithmetic is safe. prometheus_client still
does the rest: the registry, the exposition format, and the parser the tests use;
these families are ordinary custom collectors with the same ``labels(...)`` API.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class Value:
    """One counter or gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Distribution:
    """One histogram series: a count per bucket (not cumulative until collected) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound >= value
        self.total += value


class _Family(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], Value | Distribution] = {}
        registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # unknown until collected; the names cannot clash (each is made once here)


class FastCounter(_Family):
    """A counter family (exposed as ``NAME_total``)."""

    def labels(self, *values: str) -> Value:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Value()
        return child  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(values, child.value)  # type: ignore[union-attr]
        yield family


class FastGauge(FastCounter):
    """A gauge family."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(values, child.value)  # type: ignore[union-attr]
        yield family


class FastHistogram(_Family):
    """A histogram family with fixed bucket bounds."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
                 buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = tuple(float(b) for b in buckets)

    def labels(self, *values: str) -> Distribution:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Distribution(self.bounds)
        return child  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, child in list(self.children.items()):
            running, buckets = 0, []
            for edge, count in zip(edges, child.counts, strict=True):  # type: ignore[union-attr]
                running += count
                buckets.append((edge, running))
            family.add_metric(values, buckets, child.total)  # type: ignore[union-attr]
        yield family
