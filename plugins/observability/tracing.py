"""OpenTelemetry traces: a span per request and per run, child spans for provider calls
and store writes; W3C ``traceparent`` continued from the client and sent upstream.

Built only when ``otlp_endpoint`` is configured. The tracer provider is the plugin's
own (never the process-global one), so two apps in one process do not mix. Prompts
and outputs go on spans only with ``record_content = true``.
"""

from __future__ import annotations

import contextvars
import json
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kernel import Message, RequestInfo
from kernel.errors import ConfigError
from plugins.observability.settings import ObservabilitySettings

if TYPE_CHECKING:
    from kernel.runs import Run
    from kernel.types import RunError

PROPAGATOR = TraceContextTextMapPropagator()
SCOPE = "agentkernel.observability"


def make_exporter(settings: ObservabilitySettings) -> SpanExporter:
    """The OTLP/HTTP exporter (the optional ``otlp`` extra); tests replace this function."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "[plugins.observability] otlp_endpoint is set but the OTLP exporter is not installed; "
            "pip install 'agentkernel[otlp]' (opentelemetry-exporter-otlp-proto-http)") from None
    return OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=settings.otlp_headers or None)


class Tracing:
    """Starts and ends the spans; every method is synchronous and cheap."""

    def __init__(self, settings: ObservabilitySettings, db_system: str = "sqlite") -> None:
        self.record_content = settings.record_content
        self.db_system = db_system  # the kernel store's backend, for store spans
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(make_exporter(settings)))
        self.tracer = self.provider.get_tracer(SCOPE)

    def shutdown(self) -> None:
        """Export what is queued and stop."""
        self.provider.shutdown()

    # ------------------------------------------------------------------ requests

    def request_started(self, info: RequestInfo) -> None:
        parent = PROPAGATOR.extract(_HeaderCarrier(info.headers)) if info.headers is not None else None
        span = self.tracer.start_span(
            f"{info.method} {info.route or info.path}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": info.method, "url.path": info.path,
                        "http.route": info.route, "agentkernel.plugin": info.plugin},
        )
        if info.principal:
            span.set_attribute("agentkernel.principal", info.principal)
        info.state["span"] = span
        # The request's task ends with the request: its context (and this value) go with it.
        otel_context.attach(trace.set_span_in_context(span))

    def request_finished(self, info: RequestInfo) -> None:
        span = info.state.get("span")
        if span is None:
            return
        status = info.status if info.status is not None else 499
        span.set_attribute("http.response.status_code", status)
        if not info.completed:
            span.set_attribute("agentkernel.aborted", True)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # ------------------------------------------------------------------ runs

    def run_started(self, run: Run, context: contextvars.Context) -> Any:
        """The run's span (child of the current request's), made current in the run's context."""
        span = self.tracer.start_span(
            f"invoke_agent {run.agent.name}", kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent.name,
                **_model(run), "agentkernel.run.id": run.id,
                "agentkernel.provider": run.agent.provider,
                "agentkernel.run.background": run.background,
            },
        )
        if self.record_content:
            span.set_attribute("gen_ai.input.messages", _messages(run.turn.input))
            if run.turn.system:
                span.set_attribute("gen_ai.system_instructions", run.turn.system)
        context.run(otel_context.attach, trace.set_span_in_context(span))
        return span

    def run_finished(self, run: Run, span: Any) -> None:
        result = run.result()
        span.set_attribute("agentkernel.run.status", run.status)
        if run.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [run.finish_reason])
        if result.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
        if self.record_content:
            span.set_attribute("gen_ai.output.messages", _messages(result.output))
        for call in result.tool_calls:  # the model's calls, for the client to run: events, not spans
            attributes = {"gen_ai.tool.name": call.name, "gen_ai.tool.call.id": call.call_id}
            if self.record_content:
                attributes["gen_ai.tool.call.arguments"] = call.arguments
            span.add_event("gen_ai.tool.call", attributes)
        if run.error is not None:
            span.set_status(Status(StatusCode.ERROR, run.error.message[:200]))
            span.set_attribute("error.type", run.error.code)
        span.end()

    def provider_call_started(self, run: Run) -> tuple[Any, object]:
        """A client span for the call to the provider, current while the provider works."""
        model = run.turn.model or ""
        span = self.tracer.start_span(
            f"chat {model}".strip(), kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", **_model(run), "gen_ai.provider.name": run.agent.provider},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def provider_call_finished(self, run: Run, handle: tuple[Any, object], error: RunError | None) -> None:
        span, token = handle
        otel_context.detach(token)
        usage = run.result().usage
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error.message[:200]))
            span.set_attribute("error.type", error.code)
        span.end()

    def tool_call_started(self, run_span: Any, toolset: str, tool: str, call_id: str,
                          arguments: str) -> tuple[Any, object]:
        """An ``execute_tool`` span, child of the run's span (a sibling of its provider call),
        current while the tool runs (the call has a task of its own)."""
        parent = trace.set_span_in_context(run_span) if run_span is not None else None
        span = self.tracer.start_span(
            f"execute_tool {tool}", context=parent, kind=SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                        "gen_ai.tool.call.id": call_id, "gen_ai.tool.type": "extension",
                        "agentkernel.toolset": toolset},
        )
        if self.record_content:
            span.set_attribute("gen_ai.tool.call.arguments", arguments)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def tool_call_finished(self, handle: tuple[Any, object], output: Any) -> None:
        span, token = handle
        otel_context.detach(token)
        if self.record_content:
            span.set_attribute("gen_ai.tool.call.result", output.text)
        if output.is_error:
            span.set_status(Status(StatusCode.ERROR, output.text[:200] if self.record_content else None))
            span.set_attribute("error.type", "tool_error")
        span.end()

    def outgoing_headers(self, headers: dict[str, str]) -> None:
        """``traceparent`` (and ``tracestate``) of the current span, for the upstream request."""
        PROPAGATOR.inject(headers)

    def store_write(self, label: str, items: int, started: float, seconds: float, ok: bool) -> None:
        """A span for a finished store transaction, under whatever span is current."""
        if not trace.get_current_span().get_span_context().is_valid:
            return  # a write outside any request or run (startup, a timer): no trace to join
        start_ns = int(started * 1e9)
        span = self.tracer.start_span(f"store {label}", kind=SpanKind.INTERNAL, start_time=start_ns,
                                      attributes={"db.system.name": self.db_system, "agentkernel.store": label,
                                                  "agentkernel.store.items": items})
        if not ok:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start_ns + int(seconds * 1e9))


class _HeaderCarrier(dict):  # type: ignore[type-arg]
    """Quart's headers as the propagator's carrier (it only reads ``traceparent``/``tracestate``)."""

    def __init__(self, headers: Any) -> None:
        super().__init__()
        for name in ("traceparent", "tracestate"):
            value = headers.get(name)
            if value:
                self[name] = value


def _model(run: Run) -> dict[str, str]:
    """``gen_ai.request.model`` when the run names one (a provider's own default is not known here)."""
    return {"gen_ai.request.model": run.turn.model} if run.turn.model else {}


def _messages(items: list[Any]) -> str:
    """Items as GenAI-convention JSON (role and text only)."""
    out = [{"role": i.role, "parts": [{"type": "text", "content": i.text}]} for i in items if isinstance(i, Message)]
    return json.dumps(out, ensure_ascii=False)
