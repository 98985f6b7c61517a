"""Server-side tool calls of the kernel's agent loop, observed: an ``execute_tool`` span per
call (in-memory exporter) and the tool-call metrics (scraped), with real MCP servers (a
stdio subprocess configured by the operator, a streamable-HTTP one a request brings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from testsupport.mcp_http import post
from testsupport.mcp_processes import STDIO, mcp_http_server

from kernel.testing import build_app, default_config, merge, serve_in_thread
from plugins.observability import tracing
from plugins.observability.plugin import observer_of

from .support import delta, scrape, wait_until

SECRET_ARGUMENT = "the private tool argument"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "make_exporter", lambda settings: memory)
    return memory


@pytest.fixture(scope="module")
def mcp_http_url() -> Iterator[str]:
    """A streamable-HTTP MCP server (the test tools) in its own process."""
    with mcp_http_server() as url:
        yield url


def config(tmp: Path, **observability: Any) -> dict[str, Any]:
    return merge(default_config(tmp), {
        "plugins": {"openresponses": {"enabled": True},
                    "observability": {"enabled": True, "otlp_endpoint": "http://127.0.0.1:4318/v1/traces",
                                      **observability},
                    "mcp": {"enabled": True, "request_servers": True, "allowed_hosts": ["127.0.0.1"],
                            "timeout_seconds": 3}},
        "providers": {"words": {"kind": "echo"}},
        "tools": {"calc": STDIO},
        "agents": {"main": {"provider": "words"}, "tooly": {"provider": "words", "tools": ["calc"]}},
    })


def mcp_call(body: dict[str, Any]) -> dict[str, Any]:
    [call] = [i for i in body["output"] if i["type"] == "mcp_call"]
    return call


def spans_of(app: Any, exporter: InMemorySpanExporter, runs: int) -> list[ReadableSpan]:
    provider = observer_of(app.extensions["kernel"]).tracing.provider

    def enough() -> Any:
        provider.force_flush()
        spans = exporter.get_finished_spans()
        return spans if len([s for s in spans if s.name.startswith("invoke_agent")]) >= runs else None

    return list(wait_until(enough))


def test_tool_spans_and_metrics_for_configured_and_request_servers(
        tmp_path: Path, exporter: InMemorySpanExporter, mcp_http_url: str) -> None:
    app = build_app(config(tmp_path), tmp_path / "plugins.toml")
    with serve_in_thread(app) as base:
        before = scrape(base)
        ok = post(base, {"model": "tooly", "input": '/call calc__add {"a": 2, "b": 40}'})
        assert ok["status"] == "completed"
        failed = post(base, {"model": "tooly", "input": json.dumps(SECRET_ARGUMENT).join(
            ('/call calc__fail {"message": ', "}"))})
        assert mcp_call(failed)["status"] == "failed"
        timed_out = post(base, {"model": "tooly", "input": '/call calc__hang {"seconds": 30}'})
        assert "timed out" in mcp_call(timed_out)["error"]["content"][0]["text"]
        brought = post(base, {"model": "main", "input": '/call remote__echo {"text": "hi"}', "tools": [
            {"type": "mcp", "server_label": "remote", "server_url": mcp_http_url, "require_approval": "never"}]})
        assert mcp_call(brought)["output"] == "hi"
        after = scrape(base)
        spans = spans_of(app, exporter, 4)

    # Metrics: one call each, by tool set and tool, with the outcome; request-brought sets
    # are one "_request" label (their server_label is client text).
    calls = "agentkernel_tool_calls_total"
    assert delta(before, after, calls, toolset="calc", tool="add", status="ok") == 1
    assert delta(before, after, calls, toolset="calc", tool="fail", status="error") == 1
    assert delta(before, after, calls, toolset="calc", tool="hang", status="error") == 1
    assert delta(before, after, calls, toolset="_request", tool="echo", status="ok") == 1
    assert delta(before, after, calls) == 4
    assert delta(before, after, calls, toolset="remote") == 0
    durations = "agentkernel_tool_call_duration_seconds"
    assert delta(before, after, f"{durations}_count", toolset="calc", tool="hang") == 1
    assert delta(before, after, f"{durations}_sum", toolset="calc", tool="hang") >= 2.9  # timeout_seconds = 3
    assert delta(before, after, f"{durations}_bucket", toolset="calc", tool="hang", le="0.32") == 0
    assert delta(before, after, f"{durations}_count") == 4

    # Spans: one execute_tool per call, a child of its run's span, with GenAI attributes.
    tools = {s.attributes["gen_ai.tool.name"]: s for s in spans if s.name.startswith("execute_tool")}
    assert set(tools) == {"add", "fail", "hang", "echo"}
    runs = {s.context.span_id: s for s in spans if s.name.startswith("invoke_agent")}
    for name, span in tools.items():
        assert span.name == f"execute_tool {name}" and span.kind == SpanKind.INTERNAL
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.call.id"]
        assert span.parent is not None and span.parent.span_id in runs
        assert span.context.trace_id == runs[span.parent.span_id].context.trace_id
        assert "gen_ai.tool.call.arguments" not in span.attributes
        assert "gen_ai.tool.call.result" not in span.attributes
    assert tools["add"].status.status_code == StatusCode.UNSET
    assert tools["echo"].attributes["agentkernel.toolset"] == "remote"
    for name in ("fail", "hang"):
        assert tools[name].status.status_code == StatusCode.ERROR
        assert tools[name].attributes["error.type"] == "tool_error"
    # No content anywhere without record_content (the failing tool echoes its argument).
    for span in spans:
        assert all(SECRET_ARGUMENT not in str(v) for v in span.attributes.values())
        assert SECRET_ARGUMENT not in (span.status.description or "")
    # The tool's time is inside its span.
    hang = tools["hang"]
    assert (hang.end_time - hang.start_time) / 1e9 >= 2.9


def test_tool_arguments_and_results_only_with_record_content(
        tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    app = build_app(config(tmp_path, record_content=True), tmp_path / "plugins.toml")
    with serve_in_thread(app) as base:
        post(base, {"model": "tooly", "input": '/call calc__add {"a": 2, "b": 40}'})
        post(base, {"model": "tooly", "input": '/call calc__fail {"message": "disk on fire"}'})
        spans = spans_of(app, exporter, 2)
    tools = {s.attributes["gen_ai.tool.name"]: s for s in spans if s.name.startswith("execute_tool")}
    assert json.loads(tools["add"].attributes["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 40}
    assert tools["add"].attributes["gen_ai.tool.call.result"] == "42"
    assert "disk on fire" in tools["fail"].attributes["gen_ai.tool.call.result"]
    assert "disk on fire" in tools["fail"].status.description
