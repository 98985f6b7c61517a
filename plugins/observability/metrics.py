"""The Prometheus instruments, in a registry of their own (one per app, never the global one).

Names follow the OpenTelemetry semantic conventions where one exists, in Prometheus
form (dots become underscores, the unit is a suffix): ``http.server.request.duration``
-> ``http_server_request_duration_seconds``, ``gen_ai.server.time_to_first_token`` ->
``gen_ai_server_time_to_first_token_seconds`` and so on. The rest are ``agentkernel_*``.
Every label value is bounded: route templates, plugin, agent and provider names from
the config, key names, HTTP statuses and a capped set of error codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from plugins.observability.instruments import FastCounter, FastGauge, FastHistogram

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# The GenAI conventions' advised buckets.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

HTTP_LABELS = ("method", "route", "plugin", "principal", "status")
RUN_LABELS = ("agent", "provider", "principal")


class QueueDepthCollector(Collector):
    """``agentkernel_local_model_queue_depth``: read from providers at scrape time."""

    def __init__(self, providers: Callable[[], dict[str, Any]]) -> None:
        self.providers = providers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("agentkernel_local_model_queue_depth",
                                   "Runs waiting for a local model (admitted or queued)", labels=["provider"])
        for name, provider in self.providers().items():
            depth = getattr(provider, "queue_depth", None)
            if callable(depth):
                family.add_metric([name], float(depth()))
        yield family


class HttpChildren:
    """The HTTP instruments' children for one label set (looked up once, then reused)."""

    __slots__ = ("duration", "requests")

    def __init__(self, m: Metrics, labels: tuple[str, ...]) -> None:
        self.requests = m.http_requests.labels(*labels)
        self.duration = m.http_duration.labels(*labels)


class RunChildren:
    """The run instruments' children for one (agent, provider, principal)."""

    __slots__ = ("client_duration", "client_input", "client_output", "finished", "in_flight", "input_tokens", "key",
                 "output_tokens", "started", "tokens_per_second", "tpot", "ttft")

    def __init__(self, m: Metrics, agent: str, provider: str, principal: str) -> None:
        self.key = (agent, provider, principal)
        self.started = m.runs_started.labels(agent, provider, principal)
        self.in_flight = m.runs_in_flight.labels(agent, provider)
        self.input_tokens = m.tokens.labels(agent, provider, principal, "input")
        self.output_tokens = m.tokens.labels(agent, provider, principal, "output")
        self.ttft = m.ttft.labels(agent, provider)
        self.tpot = m.tpot.labels(agent, provider)
        self.tokens_per_second = m.tokens_per_second.labels(agent, provider)
        self.client_input = m.client_tokens.labels(provider, "chat", "input")
        self.client_output = m.client_tokens.labels(provider, "chat", "output")
        self.client_duration = m.client_duration.labels(provider, "chat", "")  # a successful call's
        # Per final status: (runs_finished, run_duration), filled as statuses occur.
        self.finished: dict[str, tuple[Any, Any]] = {}


class Metrics:
    """Every instrument the plugin updates."""

    def __init__(self, providers: Callable[[], dict[str, Any]]) -> None:
        # The *_created series double every counter's output and no dashboard reads them
        # (process-wide in prometheus_client; the gateway has no other Prometheus user).
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = FastCounter("http_server_requests", "HTTP requests answered", HTTP_LABELS, registry=r)
        self.http_duration = FastHistogram("http_server_request_duration_seconds",
                                       "HTTP request duration, to the last byte of the answer",
                                       HTTP_LABELS, buckets=HTTP_BUCKETS, registry=r)
        self.http_aborted = Counter("http_server_aborted_requests",
                                    "HTTP answers the client left before their last byte", ("route", "plugin"),
                                    registry=r)
        self.open_streams = FastGauge("agentkernel_open_streams", "Event streams (SSE) being sent", ("plugin",),
                                  registry=r)
        self.runs_started = FastCounter("agentkernel_runs_started", "Agent runs started", RUN_LABELS, registry=r)
        self.runs_finished = FastCounter("agentkernel_runs_finished", "Agent runs ended, by final status",
                                     (*RUN_LABELS, "status"), registry=r)
        self.runs_rejected = Counter("agentkernel_runs_rejected",
                                     "Runs refused before starting (busy provider, quota)",
                                     (*RUN_LABELS, "code"), registry=r)
        self.runs_in_flight = FastGauge("agentkernel_runs_in_flight", "Agent runs in progress", ("agent", "provider"),
                                    registry=r)
        self.rate_limited = Counter("agentkernel_rate_limited", "Answers refused by a key's limit",
                                    ("principal", "limit"), registry=r)
        self.run_duration = FastHistogram("gen_ai_server_request_duration_seconds", "Agent run duration",
                                      (*RUN_LABELS, "status"), buckets=DURATION_BUCKETS, registry=r)
        self.ttft = FastHistogram("gen_ai_server_time_to_first_token_seconds",
                              "Time from a run's start to its first output", ("agent", "provider"),
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = FastHistogram("gen_ai_server_time_per_output_token_seconds",
                              "Time per output token after the first", ("agent", "provider"),
                              buckets=TPOT_BUCKETS, registry=r)
        self.tokens_per_second = FastHistogram("agentkernel_output_tokens_per_second",
                                           "Output tokens per second of generation", ("agent", "provider"),
                                           buckets=RATE_BUCKETS, registry=r)
        self.tokens = FastCounter("agentkernel_tokens", "Tokens used by runs (counted when a run ends)",
                              (*RUN_LABELS, "gen_ai_token_type"), registry=r)
        self.client_tokens = FastHistogram("gen_ai_client_token_usage", "Tokens per call to a provider",
                                       ("provider", "gen_ai_operation_name", "gen_ai_token_type"),
                                       buckets=TOKEN_BUCKETS, registry=r)
        self.client_duration = FastHistogram("gen_ai_client_operation_duration_seconds",
                                         "Duration of a call to a provider",
                                         ("provider", "gen_ai_operation_name", "error_type"),
                                         buckets=DURATION_BUCKETS, registry=r)
        self.tool_calls = FastCounter("agentkernel_tool_calls", "Server-side tool calls the agent loop ran",
                                      ("toolset", "tool", "status"), registry=r)
        self.tool_duration = FastHistogram("agentkernel_tool_call_duration_seconds",
                                           "Duration of a server-side tool call", ("toolset", "tool"),
                                           buckets=DURATION_BUCKETS, registry=r)
        self.provider_retries = Counter("agentkernel_provider_retries",
                                        "Calls a provider retried against its backend, by fault",
                                        ("provider", "kind"), registry=r)
        self.provider_faults = Counter("agentkernel_provider_faults", "Runs failed by a fault, by error code",
                                       ("provider", "code"), registry=r)
        self.store_writes = FastCounter("agentkernel_store_writes", "Store write transactions",
                                    ("store", "outcome"), registry=r)
        self.stored_items = FastCounter("agentkernel_stored_items",
                                        "Records written (store=responses: responses stored)",
                                    ("store",), registry=r)
        self.store_duration = FastHistogram("agentkernel_store_write_duration_seconds",
                                        "Store write transaction latency (lock wait included)",
                                        ("store",), buckets=HTTP_BUCKETS, registry=r)
        r.register(QueueDepthCollector(providers))
        # prometheus_client's labels() validates and locks on every call; children are
        # cached per label set instead (the sets are bounded, so the caches are too).
        self._http: dict[tuple[str, ...], HttpChildren] = {}
        self._runs: dict[tuple[str, str, str], RunChildren] = {}

    def http(self, labels: tuple[str, ...]) -> HttpChildren:
        """The HTTP children for ``(method, route, plugin, principal, status)``."""
        found = self._http.get(labels)
        if found is None:
            found = self._http[labels] = HttpChildren(self, labels)
        return found

    def run(self, agent: str, provider: str, principal: str) -> RunChildren:
        """The run children for one agent, provider and principal."""
        key = (agent, provider, principal)
        found = self._runs.get(key)
        if found is None:
            found = self._runs[key] = RunChildren(self, agent, provider, principal)
        return found

    def finished(self, children: RunChildren, status: str) -> tuple[Any, Any]:
        """``(runs_finished, run_duration)`` children for a run's final status."""
        found = children.finished.get(status)
        if found is None:
            agent, provider, principal = children.key
            found = children.finished[status] = (
                self.runs_finished.labels(agent, provider, principal, status),
                self.run_duration.labels(agent, provider, principal, status))
        return found
