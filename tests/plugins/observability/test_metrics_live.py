"""/metrics scraped with a real HTTP client after real requests: exact counter deltas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread

from .support import delta, scrape, value, wait_until

ADMIN_KEY = "admin-key-secret-1"
USER_KEY = "user-key-secret-12"

CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"ops": {"secret": ADMIN_KEY, "admin": True}, "bob": {"secret": USER_KEY}}}},
    "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True},
                "openresponses": {"enabled": True}},
    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.05}, "broken": {"kind": "echo", "fail_after_words": 1}},
    "agents": {"slow": {"provider": "slow"}, "broken": {"provider": "broken"}},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("metrics")
    app = build_app(merge(default_config(tmp / "state"), CONFIG), tmp / "plugins.toml")
    with serve_in_thread(app) as url:
        yield url


def chat(base: str, text: str, *, model: str = "main", key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else AUTH_HEADERS
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_metrics_need_an_admin(base: str) -> None:
    assert httpx.get(f"{base}/metrics").status_code == 401
    refused = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {USER_KEY}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_required"
    scrape(base, {"Authorization": f"Bearer {ADMIN_KEY}"})  # a key with admin = true
    scrape(base)  # the main token


def test_non_streamed_requests_and_tokens_count_exactly(base: str) -> None:
    before = scrape(base)
    usages = []
    for text in ("one two three", "four five"):
        answer = chat(base, text, key=USER_KEY)
        assert answer.status_code == 200
        usages.append(answer.json()["usage"])
    after = scrape(base)
    labels = {"route": "/v1/chat/completions", "plugin": "chat_completions", "principal": "bob"}
    assert delta(before, after, "http_server_requests_total", status="200", method="POST", **labels) == 2
    assert delta(before, after, "http_server_request_duration_seconds_count", status="200", **labels) == 2
    run = {"agent": "main", "provider": "echo", "principal": "bob"}
    assert delta(before, after, "agentkernel_runs_started_total", **run) == 2
    assert delta(before, after, "agentkernel_runs_finished_total", status="completed", **run) == 2
    assert delta(before, after, "agentkernel_tokens_total", gen_ai_token_type="input", **run) == sum(
        u["prompt_tokens"] for u in usages)
    assert delta(before, after, "agentkernel_tokens_total", gen_ai_token_type="output", **run) == sum(
        u["completion_tokens"] for u in usages)
    assert delta(before, after, "gen_ai_server_request_duration_seconds_count", status="completed", **run) == 2
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_count", agent="main") == 2
    assert delta(before, after, "gen_ai_client_operation_duration_seconds_count", provider="echo") == 2
    assert delta(before, after, "gen_ai_client_token_usage_sum", provider="echo", gen_ai_token_type="output") == sum(
        u["completion_tokens"] for u in usages)
    assert value(after, "agentkernel_runs_in_flight", agent="main") == 0


def test_streamed_usage_is_counted_on_both_endpoints(base: str) -> None:
    before = scrape(base)
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30, json={
            "model": "main", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "streamed words here"}]}) as resp:
        assert resp.status_code == 200
        payloads = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    chat_usage = json.loads(payloads[-2])["usage"]
    with httpx.stream("POST", f"{base}/v1/responses", headers=AUTH_HEADERS, timeout=30,
                      json={"model": "main", "input": "responses stream too", "stream": True}) as resp:
        assert resp.status_code == 200
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    responses_usage = next(e for e in events if e["type"] == "response.completed")["response"]["usage"]
    after = scrape(base)
    run = {"agent": "main", "principal": "default"}
    assert delta(before, after, "agentkernel_tokens_total", gen_ai_token_type="output", **run) == (
        chat_usage["completion_tokens"] + responses_usage["output_tokens"])
    assert delta(before, after, "agentkernel_tokens_total", gen_ai_token_type="input", **run) == (
        chat_usage["prompt_tokens"] + responses_usage["input_tokens"])
    assert delta(before, after, "http_server_requests_total", route="/v1/responses", status="200") == 1
    assert value(after, "agentkernel_open_streams", plugin="chat_completions") == 0
    assert value(after, "agentkernel_open_streams", plugin="openresponses") == 0


def test_failures_are_counted_by_status_and_code(base: str) -> None:
    before = scrape(base)
    failed = chat(base, "this run breaks", model="broken")
    assert failed.status_code >= 500
    missing = httpx.get(f"{base}/v1/responses/resp_nothing", headers=AUTH_HEADERS)
    assert missing.status_code == 404
    unauthorized = httpx.post(f"{base}/v1/chat/completions", json={})
    assert unauthorized.status_code == 401
    after = scrape(base)
    assert delta(before, after, "http_server_requests_total", route="/v1/chat/completions", principal="default",
                 status=str(failed.status_code)) == 1
    assert delta(before, after, "http_server_requests_total", route="/v1/responses/<response_id>",
                 status="404") == 1
    assert delta(before, after, "http_server_requests_total", route="/v1/chat/completions", principal="-",
                 status="401") == 1
    assert delta(before, after, "agentkernel_runs_finished_total", agent="broken", status="failed") == 1
    assert delta(before, after, "agentkernel_provider_faults_total", provider="broken") == 1
    assert delta(before, after, "gen_ai_client_operation_duration_seconds_count", provider="broken") == 1
    assert value(after, "gen_ai_client_operation_duration_seconds_count", provider="broken", error_type="") == 0


def test_a_client_that_disconnects_mid_stream(base: str) -> None:
    before = scrape(base)
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30, json={
            "model": "slow", "stream": True,
            "messages": [{"role": "user", "content": " ".join(["word"] * 60)}]}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        during = scrape(base)
        assert value(during, "agentkernel_open_streams", plugin="chat_completions") == 1
        assert value(during, "agentkernel_runs_in_flight", agent="slow") == 1
        lines.close()  # leave after the first chunk: the connection closes, the body is abandoned

    def settled() -> Any:
        now = scrape(base)
        return now if delta(before, now, "agentkernel_runs_finished_total", agent="slow") == 1 else None

    after = wait_until(settled)
    after = wait_until(lambda: (s := scrape(base)) and value(s, "agentkernel_open_streams", plugin="chat_completions")
                       == 0 and s)
    assert delta(before, after, "agentkernel_runs_finished_total", agent="slow", status="cancelled") == 1
    assert delta(before, after, "http_server_aborted_requests_total", route="/v1/chat/completions") == 1
    assert delta(before, after, "http_server_requests_total", route="/v1/chat/completions", status="200") == 1
    assert value(after, "agentkernel_runs_in_flight", agent="slow") == 0


def test_store_writes_and_stored_responses(base: str) -> None:
    before = scrape(base)
    for text in ("keep this", "and this"):
        stored = httpx.post(f"{base}/v1/responses", headers=AUTH_HEADERS, json={"model": "main", "input": text})
        assert stored.status_code == 200
    unstored = httpx.post(f"{base}/v1/responses", headers=AUTH_HEADERS,
                          json={"model": "main", "input": "not this", "store": False})
    assert unstored.status_code == 200

    def written() -> Any:
        now = scrape(base)
        return now if delta(before, now, "agentkernel_stored_items_total", store="responses") >= 2 else None

    after = wait_until(written)
    assert delta(before, after, "agentkernel_stored_items_total", store="responses") == 2
    assert delta(before, after, "agentkernel_store_write_duration_seconds_count", store="responses") >= 1


def test_labels_never_carry_request_ids_or_text(base: str) -> None:
    httpx.post(f"{base}/v1/chat/completions", headers={**AUTH_HEADERS, "x-request-id": "req-unique-123"},
               json={"model": "main", "messages": [{"role": "user", "content": "secret-looking-text-xyz"}]})
    made_up = httpx.request("MADEUPMETHOD", f"{base}/v1/chat/completions", headers=AUTH_HEADERS)
    assert made_up.status_code == 405
    text = httpx.get(f"{base}/metrics", headers=AUTH_HEADERS).text
    assert "secret-looking-text-xyz" not in text and "req-unique-123" not in text
    assert "MADEUPMETHOD" not in text and 'method="_OTHER"' in text
    assert USER_KEY not in text and ADMIN_KEY not in text


def test_metrics_public_needs_no_secret(make_app: Any, live_server: Any) -> None:
    app = make_app({"plugins": {"observability": {"enabled": True, "metrics_public": True}}})
    with live_server(app) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert httpx.get(f"{url}/-/usage").status_code == 401  # usage stays behind auth


def test_the_documented_dashboard_reads_metrics_that_exist(base: str) -> None:
    import re

    doc = (Path(__file__).parents[3] / "docs" / "observability.md").read_text()
    dashboard = json.loads(doc.split("### Grafana dashboard", 1)[1].split("```json", 1)[1].split("```", 1)[0])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(dashboard["panels"]) == 6 and exprs
    chat(base, "make every series exist")
    names = {name for name, _ in scrape(base)}
    for expr in exprs:
        selectors = re.sub(r"by \([^)]*\)", "", expr)  # label names are not metrics
        for metric in re.findall(r"\b(?:http_server|agentkernel|gen_ai)_[a-z_]+", selectors):
            assert metric in names, f"{metric} (in {expr!r}) is not exported"
