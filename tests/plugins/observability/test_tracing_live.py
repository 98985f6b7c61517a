"""Traces through the SDK's in-memory exporter: span tree, GenAI attributes, traceparent
continued from the client and forwarded to the (fake) OpenAI-compatible upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from quart import Quart
from testsupport.fake_openai import FakeOpenAI, stream_reply, text_chunks, usage

from kernel.testing import AUTH_HEADERS
from plugins.observability import tracing
from plugins.observability.plugin import observer_of

from .support import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT = "the private prompt words"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "make_exporter", lambda settings: memory)
    return memory


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def traced_app(make_app: Callable[..., Quart], fake: FakeOpenAI, **options: Any) -> Quart:
    return make_app({
        "plugins": {"observability": {"enabled": True, "otlp_endpoint": "http://127.0.0.1:4318/v1/traces", **options},
                    "chat_completions": {"enabled": True}, "openai_upstream": {"enabled": True}},
        "providers": {"up": {"kind": "openai_upstream", "base_url": fake.base_url, "api_key": "sk-fake-0123456789",
                             "model": "fake-model", "backoff_initial": 0.01, "backoff_max": 0.02}},
        "agents": {"main": {"provider": "up", "model": "fake-model"}},
    })


def finished_spans(app: Quart, exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    provider = observer_of(app.extensions["kernel"]).tracing.provider  # type: ignore[union-attr]

    def enough() -> Any:
        provider.force_flush()
        spans = exporter.get_finished_spans()
        chats = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes["http.route"] == "/v1/chat/completions"]
        return spans if len(chats) >= count else None

    return list(wait_until(enough))


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_span_tree_and_traceparent_forwarded(make_app: Callable[..., Quart], live_server: Any,
                                             exporter: InMemorySpanExporter, fake: FakeOpenAI) -> None:
    fake.script(stream_reply(text_chunks("Hel", "lo", usage_=usage(11, 2))))
    app = traced_app(make_app, fake)
    with live_server(app) as base:
        answer = httpx.post(f"{base}/v1/chat/completions", timeout=30, headers={
            **AUTH_HEADERS, "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
            "x-session-key": "trace-test"}, json={"model": "main", "messages": [{"role": "user", "content": PROMPT}]})
        assert answer.status_code == 200
        spans = finished_spans(app, exporter, 1)
    [server] = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes["http.route"] == "/v1/chat/completions"]
    [run] = by_name(spans, "invoke_agent main")
    [call] = by_name(spans, "chat fake-model")
    [store] = by_name(spans, "store sessions")
    # The client's trace is continued: same trace id, our request span under the client's span.
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CLIENT_SPAN
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200
    assert run.parent.span_id == server.context.span_id
    assert call.parent.span_id == run.context.span_id and call.kind == SpanKind.CLIENT
    assert store.parent.span_id == run.context.span_id
    assert store.attributes["db.system.name"] == app.extensions["kernel"].store.dialect
    assert {s.context.trace_id for s in (server, run, call, store)} == {int(TRACE_ID, 16)}
    assert run.attributes["gen_ai.agent.name"] == "main"
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.usage.input_tokens"] == 11
    assert run.attributes["gen_ai.usage.output_tokens"] == 2
    assert run.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert call.attributes["gen_ai.request.model"] == "fake-model"
    # The upstream got the provider-call span as its parent, in the same trace.
    [upstream] = fake.chat_requests
    assert upstream.headers["traceparent"].startswith(f"00-{TRACE_ID}-{format(call.context.span_id, '016x')}-")
    # Content is never recorded by default.
    for span in spans:
        assert "gen_ai.input.messages" not in span.attributes
        assert all(PROMPT not in str(v) for v in span.attributes.values())


def test_content_only_with_record_content(make_app: Callable[..., Quart], live_server: Any,
                                          exporter: InMemorySpanExporter, fake: FakeOpenAI) -> None:
    fake.script(stream_reply(text_chunks("the answer", usage_=usage(3, 2))))
    app = traced_app(make_app, fake, record_content=True)
    with live_server(app) as base:
        httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30,
                   json={"model": "main", "messages": [{"role": "user", "content": PROMPT}]})
        spans = finished_spans(app, exporter, 1)
    [run] = by_name(spans, "invoke_agent")
    assert PROMPT in run.attributes["gen_ai.input.messages"]
    assert "the answer" in run.attributes["gen_ai.output.messages"]


def test_a_new_trace_without_traceparent_and_failed_calls_marked(
        make_app: Callable[..., Quart], live_server: Any, exporter: InMemorySpanExporter, fake: FakeOpenAI) -> None:
    from testsupport.fake_openai import error_reply

    fake.script(error_reply(400, "bad model", code="model_not_found"))
    app = traced_app(make_app, fake)
    with live_server(app) as base:
        failed = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30,
                            json={"model": "main", "messages": [{"role": "user", "content": "hi"}]})
        assert failed.status_code >= 400
        spans = finished_spans(app, exporter, 1)
    [server] = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes["http.route"] == "/v1/chat/completions"]
    assert server.parent is None  # no traceparent: a trace of our own
    [call] = by_name(spans, "chat")
    assert not call.status.is_ok and call.attributes["error.type"] == "model_not_found"
    assert fake.chat_requests[0].headers["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")


def test_tracing_is_off_without_an_endpoint(make_app: Callable[..., Quart], live_server: Any,
                                            fake: FakeOpenAI) -> None:
    fake.script(stream_reply(text_chunks("ok")))
    app = make_app({
        "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True},
                    "openai_upstream": {"enabled": True}},
        "providers": {"up": {"kind": "openai_upstream", "base_url": fake.base_url, "model": "fake-model"}},
        "agents": {"main": {"provider": "up"}},
    })
    assert observer_of(app.extensions["kernel"]).tracing is None
    with live_server(app) as base:
        httpx.post(f"{base}/v1/chat/completions", timeout=30, headers={
            **AUTH_HEADERS, "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
            json={"model": "main", "messages": [{"role": "user", "content": "hi"}]})
    assert "traceparent" not in fake.chat_requests[0].headers


def test_spans_reach_a_real_otlp_http_receiver(make_app: Callable[..., Quart], live_server: Any) -> None:
    """The OTLP/HTTP exporter (the otlp extra) posts protobuf spans to the endpoint, headers included."""
    import http.server
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app({"plugins": {"chat_completions": {"enabled": True}, "observability": {
            "enabled": True, "otlp_endpoint": f"http://127.0.0.1:{server.server_port}/v1/traces",
            "otlp_headers": {"x-collector-key": "k-123"}, "service_name": "gw-test"}}})
        with live_server(app) as base:
            answer = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30,
                                json={"model": "main", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200
        # Stopping the server shut the tracer provider down, which exported what was queued.
        assert received, "no spans were exported"
        names = set()
        for headers, body in received:
            assert headers["content-type"] == "application/x-protobuf"
            assert headers["x-collector-key"] == "k-123"
            export = ExportTraceServiceRequest.FromString(body)
            for resource_spans in export.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
                assert service == "gw-test"
                names |= {span.name for scope in resource_spans.scope_spans for span in scope.spans}
        assert {"POST /v1/chat/completions", "invoke_agent main", "chat"} <= names
    finally:
        server.shutdown()


def test_otlp_endpoint_without_the_exporter_is_a_config_error(make_app: Callable[..., Quart],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from kernel.errors import ConfigError

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'agentkernel\[otlp\]'"):
        make_app({"plugins": {"observability": {"enabled": True, "otlp_endpoint": "http://127.0.0.1:4318/v1/traces"}}})


def test_otlp_endpoint_must_be_http(make_app: Callable[..., Quart]) -> None:
    from kernel.errors import ConfigError

    with pytest.raises(ConfigError, match="otlp_endpoint"):
        make_app({"plugins": {"observability": {"enabled": True, "otlp_endpoint": "grpc://collector:4317"}}})


def test_tool_calls_are_events_on_the_run_span(make_app: Callable[..., Quart], live_server: Any,
                                                exporter: InMemorySpanExporter) -> None:
    app = make_app({"plugins": {"chat_completions": {"enabled": True}, "observability": {
        "enabled": True, "otlp_endpoint": "http://127.0.0.1:4318/v1/traces"}}})
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    with live_server(app) as base:
        answer = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30, json={
            "model": "main", "messages": [{"role": "user", "content": PROMPT}], "tools": [tool],
            "tool_choice": "required"})
        assert answer.status_code == 200
        [call] = answer.json()["choices"][0]["message"]["tool_calls"]
        spans = finished_spans(app, exporter, 1)
    [run] = by_name(spans, "invoke_agent")
    [event] = [e for e in run.events if e.name == "gen_ai.tool.call"]
    assert event.attributes["gen_ai.tool.name"] == "lookup"
    assert event.attributes["gen_ai.tool.call.id"] == call["id"]
    assert "gen_ai.tool.call.arguments" not in event.attributes  # arguments are content
