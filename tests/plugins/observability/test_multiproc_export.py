"""The workers' metrics files (prometheus_client's multiprocess mode) in one test process:
one worker's files say exactly what its own registry says; two workers add up; an exited
worker's gauges stop counting while its counters stay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest, values
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from plugins.observability.metrics import Metrics
from plugins.observability.multiproc import MULTIPROC_ENV, MultiprocessExport

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes, skip: set[str] = frozenset()) -> Samples:  # type: ignore[assignment]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode()) if family.name not in skip
            for s in family.samples}


def busy(metrics: Metrics, requests: int, in_flight: float) -> None:
    """Some traffic through the plugin's own (lock-free) instruments."""
    http = metrics.http(("POST", "/v1/chat/completions", "chat_completions", "acme", "200"))
    for i in range(requests):
        http.requests.value += 1
        http.duration.observe(0.003 * i)
    run = metrics.run("main", "echo", "acme")
    run.started.value += requests
    run.in_flight.value += in_flight
    run.output_tokens.value += 7 * requests
    run.ttft.observe(0.02)
    metrics.open_streams.labels("chat_completions").inc(in_flight)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    yield tmp_path


def worker(folder: Path, pid: int) -> tuple[Metrics, MultiprocessExport, type]:
    """A worker's metrics, writing files as process ``pid`` (prometheus_client's value class)."""
    value_class = values.MultiProcessValue(process_identifier=lambda: pid)
    metrics = Metrics(lambda: {})
    return metrics, MultiprocessExport(metrics, str(folder), value_class), value_class


def test_one_workers_files_say_what_its_registry_says(folder: Path) -> None:
    metrics, export, value_class = worker(folder, 1001)
    try:
        busy(metrics, requests=25, in_flight=3)
        own = parse(generate_latest(metrics.registry), skip=export.native)
        export.flush()
        export.flush()  # absolute values: a second flush changes nothing
        merged = parse(export.render())
        assert merged == {key: v for key, v in own.items() if not key[0].endswith("_created")}
        assert merged[("http_server_requests_total", frozenset({
            ("method", "POST"), ("route", "/v1/chat/completions"), ("plugin", "chat_completions"),
            ("principal", "acme"), ("status", "200")}))] == 25
    finally:
        value_class.close_all_files()


def test_two_workers_add_up_and_an_exited_ones_gauges_go(folder: Path) -> None:
    first, first_export, first_class = worker(folder, 2001)
    second, second_export, second_class = worker(folder, 2002)
    try:
        busy(first, requests=10, in_flight=2)
        busy(second, requests=4, in_flight=1)
        first_export.flush()
        second_export.flush()
        merged = parse(first_export.render())

        def total(name: str) -> float:
            return sum(v for (n, _), v in merged.items() if n == name)

        assert total("http_server_requests_total") == 14
        assert total("http_server_request_duration_seconds_count") == 14
        assert total("agentkernel_runs_started_total") == 14
        assert total("agentkernel_tokens_total") == 7 * 14
        assert total("agentkernel_runs_in_flight") == 3  # livesum: the workers' gauges added
        assert total("agentkernel_open_streams") == 3
        # Cumulative buckets again after the files' per-bucket counts: +Inf is the count.
        inf = sum(v for (n, labels), v in merged.items()
                  if n == "http_server_request_duration_seconds_bucket" and ("le", "+Inf") in labels)
        assert inf == 14

        mark_process_dead(2002, str(folder))  # what kernel serve's parent does when a worker exits
        merged = parse(first_export.render())
        assert total("agentkernel_runs_in_flight") == 2  # only the live worker's
        assert total("http_server_requests_total") == 14  # counters stay: totals never go backwards
    finally:
        first_class.close_all_files()
        second_class.close_all_files()
