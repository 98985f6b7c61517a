"""Runs behind the endpoint: disconnects, images, sessions, failures mapped to statuses, lifecycle."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from kernel import Failed, ProviderKind, RunError, RunEvent, TextDelta, Turn, hookimpl
from kernel.testing import AUTH_HEADERS

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LONG = " ".join(f"w{i}" for i in range(200))  # 200 words x 0.05 s: ten seconds unless cancelled


def wait_for_run(server, predicate, timeout: float = 5.0):
    """The first run of the (threaded) server matching ``predicate``, once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in list(server.kernel.runs.runs.values()):
            if predicate(run) and run.done:
                return run
        time.sleep(0.02)
    raise AssertionError("no matching run ended in time")


def test_stream_disconnect_cancels_the_run(server):
    marker = f"stream-{uuid.uuid4().hex} {LONG}"
    with server.http.stream("POST", "/v1/chat/completions", json={
            "model": "agent:slow", "stream": True, "messages": [{"role": "user", "content": marker}]}) as resp:
        lines = resp.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        content = next(line for line in lines if '"content":"' in line and '"role"' not in line)
        assert "stream-" in content
    run_id = "run_" + first["id"].removeprefix("chatcmpl-")
    run = wait_for_run(server, lambda r: r.id == run_id)
    assert run.status == "cancelled"
    assert len([e for e in run.events_log if isinstance(e, TextDelta)]) < 50


def test_non_streaming_disconnect_cancels_the_run(server):
    marker = f"plain-{uuid.uuid4().hex}"
    with pytest.raises(httpx.ReadTimeout):
        server.post({"model": "agent:slow", "messages": [{"role": "user", "content": f"{marker} {LONG}"}]},
                    timeout=httpx.Timeout(30, read=0.3))
    run = wait_for_run(server, lambda r: marker in r.turn.input[0].text)
    assert run.status == "cancelled"


def test_image_input_reaches_the_provider(server):
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    completion = server.sdk.chat.completions.create(model="agent:transcript", messages=[
        {"role": "system", "content": "Describe images."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]},
    ])
    assert completion.choices[0].message.content.splitlines() == [
        "system: Be brief.", "", "Describe images.", "user: What is this? [image image/png]"]


def test_session_continuity_with_x_session_key(server):
    key = f"test-{uuid.uuid4().hex}"
    headers = {"x-session-key": key}
    server.sdk.chat.completions.create(model="agent:transcript", messages=[{"role": "user", "content": "apples"}],
                                       extra_headers=headers)
    second = server.sdk.chat.completions.create(model="agent:transcript", extra_headers=headers,
                                                messages=[{"role": "user", "content": "pears"}])
    lines = second.choices[0].message.content.splitlines()
    assert lines[0] == "system: Be brief."
    assert lines[1] == "user: apples" and lines[2].startswith("assistant: system: Be brief.")
    assert lines[-1] == "user: pears"
    # Without the key nothing is remembered.
    fresh = server.sdk.chat.completions.create(model="agent:transcript",
                                               messages=[{"role": "user", "content": "pears"}])
    assert fresh.choices[0].message.content.splitlines() == ["system: Be brief.", "user: pears"]


def test_user_field_keys_a_per_user_session(server):
    user = f"ann-{uuid.uuid4().hex[:8]}"
    server.sdk.chat.completions.create(model="agent:transcript", user=user,
                                       messages=[{"role": "user", "content": "first"}])
    again = server.sdk.chat.completions.create(model="agent:transcript", user=user,
                                               messages=[{"role": "user", "content": "second"}])
    text = again.choices[0].message.content
    assert "user: first" in text and text.endswith("user: second")
    other = server.sdk.chat.completions.create(model="agent:transcript", user=user + "x",
                                               messages=[{"role": "user", "content": "second"}])
    assert "first" not in other.choices[0].message.content


class Saturated:
    """A provider whose runs fail with a 429 and a retry hint."""

    name = "saturated"
    accepts_images = False

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        yield Failed(RunError("too busy", code="rate_limited", type="rate_limit_error", status=429,
                              retry_after=2.5))

    async def aclose(self) -> None:
        return None


class SaturatedPlugin:
    @hookimpl
    def register_providers(self) -> list[ProviderKind]:
        return [ProviderKind(kind="saturated", factory=lambda name, options, kernel: Saturated())]


@pytest.mark.parametrize("stream", [False, True])
def test_run_error_status_maps_to_http_429_and_504(make_app, live_server, stream):
    app = make_app({
        "plugins": {"chat_completions": {"enabled": True, "run_timeout_seconds": 0.2}},
        "providers": {"slow": {"kind": "echo", "delay_seconds": 0.5}},
        "agents": {"busy": {"provider": "saturated"}, "slow": {"provider": "slow"}},
    }, extra_plugins={"saturated": SaturatedPlugin()})
    with live_server(app) as base:
        busy = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, json={
            "model": "agent:busy", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "3"
        assert busy.json()["error"] == {"message": "too busy", "type": "rate_limit_error", "param": None,
                                        "code": "rate_limited"}
        slow = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, json={
            "model": "agent:slow", "stream": stream, "messages": [{"role": "user", "content": "hi there"}]})
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"


def test_disabled_by_default_and_logs_once_when_enabled(make_app, live_server, caplog):
    with live_server(make_app()) as base:
        resp = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS,
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 404
        assert httpx.get(f"{base}/v1/models", headers=AUTH_HEADERS).status_code == 404
    caplog.set_level(logging.INFO, logger="plugins.chat_completions")
    with live_server(make_app({"plugins": {"chat_completions": {"enabled": True}}})) as base:
        assert httpx.get(f"{base}/v1/models", headers=AUTH_HEADERS).status_code == 200
    notices = [r.getMessage() for r in caplog.records if r.name == "plugins.chat_completions"]
    assert len(notices) == 1 and "legacy" in notices[0] and "/v1/responses" in notices[0]


def test_unknown_plugin_options_are_config_errors(make_app):
    from kernel.errors import ConfigError

    with pytest.raises(ConfigError, match="max_body_byte"):
        make_app({"plugins": {"chat_completions": {"enabled": True, "max_body_byte": 5}}})
