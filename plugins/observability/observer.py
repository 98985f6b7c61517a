"""The plugin's one observer: metrics, traces, usage and quotas from the kernel's call sites."""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel import ApiError, Observer, RequestInfo
from kernel.types import Message, Reasoning, ToolCall, ToolResult, Turn
from plugins.observability.labels import KNOWN_METHODS, BoundedLabel
from plugins.observability.metrics import Metrics, RunChildren
from plugins.observability.quotas import Quotas, Reservation
from plugins.observability.usage import MAX_MODEL_LENGTH, UsageStore

if TYPE_CHECKING:
    from kernel.agents import Agent
    from kernel.runs import Run
    from kernel.tools import ToolOutput, ToolSet
    from kernel.types import RunError
    from plugins.observability.tracing import Tracing

# Set while an HTTP request (already counted against requests_per_minute) is being handled.
IN_HTTP_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("observability_in_http_request", default=False)
FIRST_OUTPUT_KINDS = frozenset({"text_delta", "reasoning_delta", "tool_call_start"})
# The toolset label of every tool set a request brought (its server_label is client text).
REQUEST_TOOLSET = "_request"
CHARS_PER_TOKEN = 4
# Finished runs are applied to the metrics in batches of at most this many (and at every scrape).
DRAIN_BATCH = 64  # the usual rough figure for English text; settled with actual usage after the run


def estimate_tokens(turn: Turn) -> int:
    """A run's token estimate before it runs: its text / 4, plus the output it may produce."""
    chars = len(turn.system)
    for item in (*turn.history, *turn.input):
        if isinstance(item, Message):
            chars += len(item.text)
        elif isinstance(item, ToolCall):
            chars += len(item.name) + len(item.arguments)
        elif isinstance(item, ToolResult):
            chars += len(item.output)
        elif isinstance(item, Reasoning):
            chars += len(item.text)
    return math.ceil(chars / CHARS_PER_TOKEN) + (turn.limits.max_output_tokens or 0)


@dataclass(slots=True)
class RunState:
    """What the observer keeps about a run between its start and its end."""

    started: float
    children: RunChildren
    first_output: float | None = None
    reservation: Reservation | None = None
    span: Any = None


class _FirstOutput:
    """A run listener that notes the first output's time, then takes itself off the run.

    A class, not a closure: a nested function naming itself is a reference cycle, left
    to the cyclic garbage collector once per run.
    """

    __slots__ = ("state",)

    def __init__(self, state: RunState) -> None:
        self.state = state

    def __call__(self, run: Run, ev: Any) -> None:
        if ev.kind in FIRST_OUTPUT_KINDS:
            self.state.first_output = time.perf_counter()
            # A new list: the kernel is iterating the old one right now.
            run.listeners = [f for f in run.listeners if f is not self]


class ObservabilityObserver(Observer):
    """Implements :class:`kernel.Observer`; owns the metrics, quotas, usage store and tracing."""

    #: The kernel warns about keys with limits when no observer says this.
    enforces_key_limits = True

    def __init__(self, metrics: Metrics, quotas: Quotas, usage: UsageStore, tracing: Tracing | None) -> None:
        self.metrics = metrics
        self.quotas = quotas
        self.usage = usage
        self.tracing = tracing
        self.codes = BoundedLabel()  # error codes can come from upstreams: capped
        # Tool names: the operator's tool sets' (capped generously) and those of tool sets a
        # request brought (client-made: capped on their own, so they cannot crowd out the rest).
        self.tool_names = BoundedLabel(limit=200)
        self.request_tool_names = BoundedLabel(limit=50)
        self._runs: dict[str, RunState] = {}
        self._http_children = metrics._http
        # Without limited keys (and without traces) these have nothing to do: the kernel
        # then skips them, a few calls less on every request.
        unused = set()
        if not quotas.keys:
            unused |= {"response_headers", "admit_run"}
            if tracing is None:
                unused.add("request_started")
        self.unused_hooks = frozenset(unused)
        self._admitted: Reservation | None = None
        # Finished runs whose metrics and usage are not applied yet (see run_finished).
        self._finished: list[tuple[Run, RunState | None, float, float, Any]] = []
        usage.before_flush = self.drain

    # ------------------------------------------------------------------ requests

    def request_started(self, info: RequestInfo) -> None:
        if self.tracing is not None:
            self.tracing.request_started(info)
        if self.quotas.keys:
            IN_HTTP_REQUEST.set(True)
            self._count_request(info.principal)

    def _count_request(self, principal: str | None) -> None:
        try:
            self.quotas.check_request(principal)
        except ApiError as exc:
            self.metrics.rate_limited.labels(principal or "-", "requests_per_minute").inc()
            raise exc from None

    def response_headers(self, info: RequestInfo, headers: MutableMapping[str, str]) -> None:
        if self.quotas.keys and info.principal:
            values = self.quotas.headers(info.principal)
            # Appended, not set: nothing else writes x-ratelimit-*, and werkzeug's set()
            # scans every header already there, six times (a third of what limits cost).
            extend = getattr(headers, "extend", None)
            if extend is not None:
                extend(values)
            else:
                headers.update(values)

    def response_started(self, info: RequestInfo) -> None:
        if info.streaming:
            info.state["stream"] = True
            self.metrics.open_streams.labels(info.plugin or "-").inc()

    def request_finished(self, info: RequestInfo) -> None:
        route, plugin = info.route or "-", info.plugin or "-"
        method = info.method if info.method in KNOWN_METHODS else "_OTHER"  # method_label(), inlined
        status = "499" if info.status is None else str(info.status)  # status_class(), inlined
        key = (method, route, plugin, info.principal or "-", status)
        children = self._http_children.get(key) or self.metrics.http(key)  # the lookup inlined: a call saved
        children.requests.value += 1
        children.duration.observe((info.finished or time.perf_counter()) - info.started)
        if not info.completed:
            self.metrics.http_aborted.labels(route, plugin).inc()
        if info.state.get("stream"):
            self.metrics.open_streams.labels(plugin).dec()
        if self.tracing is not None:
            self.tracing.request_finished(info)

    # ------------------------------------------------------------------ runs

    def admit_run(self, turn: Turn, agent: Agent, principal: str | None) -> None:
        self._admitted = None
        if not self.quotas.keys:
            return
        if not IN_HTTP_REQUEST.get():
            # A run started by a WebSocket message (not an HTTP request): it counts as one.
            self._count_request(principal)
        try:
            self._admitted = self.quotas.admit(principal, estimate_tokens(turn))
        except ApiError as exc:
            limit = {"requests": "max_concurrent_runs", "tokens": "tokens_per_minute"}.get(exc.type, "budget_tokens")
            self.metrics.rate_limited.labels(principal or "-", limit).inc()
            raise exc from None

    def run_rejected(self, turn: Turn, agent: Agent, principal: str | None, status: int, code: str | None) -> None:
        self.metrics.runs_rejected.labels(agent.name, agent.provider, principal or "-", self.codes(code)).inc()

    def run_started(self, run: Run, context: contextvars.Context) -> None:
        children = self.metrics.run(run.agent.name, run.agent.provider, run.principal or "-")
        state = RunState(started=time.perf_counter(), children=children, reservation=self._admitted)
        self._admitted = None
        self._runs[run.id] = state
        children.started.value += 1
        children.in_flight.value += 1
        if self.tracing is not None:
            state.span = self.tracing.run_started(run, context)
        run.listeners.append(_FirstOutput(state))

    def provider_call_started(self, run: Run) -> Any:
        handle = self.tracing.provider_call_started(run) if self.tracing is not None else None
        return time.perf_counter(), handle

    def provider_call_finished(self, run: Run, token: Any, error: RunError | None) -> None:
        started, handle = token
        if error is None:
            state = self._runs.get(run.id)
            duration = state.children.client_duration if state is not None else \
                self.metrics.client_duration.labels(run.agent.provider, "chat", "")
        else:
            duration = self.metrics.client_duration.labels(run.agent.provider, "chat", self.codes(error.code))
        duration.observe(time.perf_counter() - started)
        if handle is not None and self.tracing is not None:
            self.tracing.provider_call_finished(run, handle, error)

    def run_finished(self, run: Run) -> None:
        # Only what cannot wait happens here (quotas, the span); the metrics and the usage
        # record are queued and applied in batches by drain(): run one after another in a
        # tight loop they cost a fraction of what they cost one per request, between other
        # code (measured: ~5 us per run in the request path, ~1.5 us in a batch).
        state = self._runs.pop(run.id, None)
        now = time.perf_counter()
        usage = run.usage
        pending = self._finished
        pending.append((run, state, now, self.quotas.clock(), usage))
        if state is not None:
            if state.reservation is not None:
                used = usage.input_tokens + usage.output_tokens if usage is not None else 0
                self.quotas.settle(state.reservation, used)
            if state.span is not None and self.tracing is not None:
                self.tracing.run_finished(run, state.span)
        if len(pending) >= DRAIN_BATCH:
            self.drain()

    def drain(self) -> None:
        """Apply the queued finished runs to the metrics and the usage store (before every
        scrape and usage write, and every ``DRAIN_BATCH`` runs)."""
        pending, self._finished = self._finished, []
        for run, state, now, at, usage in pending:
            self._apply_finished(run, state, now, at, usage)

    def _apply_finished(self, run: Run, state: RunState | None, now: float, at: float, usage: Any) -> None:
        agent, provider, principal = run.agent.name, run.agent.provider, run.principal or "-"
        children = state.children if state is not None else self.metrics.run(agent, provider, principal)
        input_tokens = usage.input_tokens if usage is not None else 0
        output_tokens = usage.output_tokens if usage is not None else 0
        finished, duration = self.metrics.finished(children, run.status)
        # Counters updated in place (a call each saved: this runs for every run).
        finished.value += 1
        children.input_tokens.value += input_tokens
        children.output_tokens.value += output_tokens
        if usage is not None:
            children.client_input.observe(input_tokens)
            children.client_output.observe(output_tokens)
        if run.status == "failed" and run.error is not None:
            self.metrics.provider_faults.labels(provider, self.codes(run.error.code)).inc()
        self.usage.add(at, principal, agent, provider, (run.turn.model or "")[:MAX_MODEL_LENGTH],
                       run.status, input_tokens, output_tokens)
        if state is None:
            return
        children.in_flight.value -= 1
        duration.observe(now - state.started)
        if state.first_output is not None:
            children.ttft.observe(state.first_output - state.started)
            generating = now - state.first_output
            if output_tokens > 1 and generating > 0:
                children.tpot.observe(generating / (output_tokens - 1))
                children.tokens_per_second.observe(output_tokens / generating)

    # ------------------------------------------------------------------ server-side tools

    def tool_call_started(self, run: Run, toolset: ToolSet, tool: str, call_id: str, arguments: str) -> Any:
        if getattr(toolset, "per_request", False):
            labels = (REQUEST_TOOLSET, self.request_tool_names(tool))  # a client-chosen server label: not a label
        else:
            labels = (toolset.name, self.tool_names(tool))
        span = None
        if self.tracing is not None:
            state = self._runs.get(run.id)
            span = self.tracing.tool_call_started(state.span if state is not None else None, toolset.name, tool,
                                                  call_id, arguments)
        return time.perf_counter(), labels, span

    def tool_call_finished(self, run: Run, token: Any, output: ToolOutput) -> None:
        started, labels, span = token
        m = self.metrics
        m.tool_calls.labels(*labels, "error" if output.is_error else "ok").value += 1
        m.tool_duration.labels(*labels).observe(time.perf_counter() - started)
        if span is not None and self.tracing is not None:
            self.tracing.tool_call_finished(span, output)

    # ------------------------------------------------------------------ providers and store

    def provider_retry(self, provider: str, kind: str) -> None:
        self.metrics.provider_retries.labels(provider, self.codes(kind)).inc()

    def outgoing_headers(self, headers: dict[str, str]) -> None:
        if self.tracing is not None:
            self.tracing.outgoing_headers(headers)

    def store_write(self, label: str, items: int, started: float, seconds: float, ok: bool) -> None:
        m = self.metrics
        m.store_writes.labels(label, "ok" if ok else "error").inc()
        m.store_duration.labels(label).observe(seconds)
        if ok:
            m.stored_items.labels(label).inc(items)
        if self.tracing is not None:
            self.tracing.store_write(label, items, started, seconds, ok)
