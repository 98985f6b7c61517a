"""Runs behind the endpoint: disconnects, images, sessions, failures mapped to statuses, lifecycle."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from kernel import Failed, ProviderKind, RunError, RunEvent, TextDelta, Turn, hookimpl
from kernel.testing import AUTH_HEADERS, TEST_TOKEN

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
    with server.raw.stream("POST", "/v1/chat/completions", json={
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
        server.raw.post("/v1/chat/completions", timeout=httpx.Timeout(30, read=0.3),
                        json={"model": "agent:slow", "messages": [{"role": "user", "content": f"{marker} {LONG}"}]})
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


class Recording:
    """A provider that keeps every turn it is given and answers "ok"."""

    name = "recording"
    accepts_images = False

    def __init__(self) -> None:
        self.turns: list[Turn] = []

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        self.turns.append(turn)
        yield TextDelta("ok")

    async def aclose(self) -> None:
        return None


def test_request_fields_reach_the_provider(make_app, live_server):
    recording = Recording()

    class RecordingPlugin:
        @hookimpl
        def register_providers(self) -> list[ProviderKind]:
            return [ProviderKind(kind="recording", factory=lambda name, options, kernel: recording)]

    app = make_app({"plugins": {"chat_completions": {"enabled": True}},
                    "agents": {"rec": {"provider": "recording", "instructions": "Agent rules."}}},
                   extra_plugins={"recording": RecordingPlugin()})
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                "parameters": {"type": "object", "properties": {}}}}
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o", extra_headers={"x-agent-id": "rec"},
            messages=[{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "hi"}],
            tools=[weather], tool_choice="none", parallel_tool_calls=False, max_completion_tokens=7,
            temperature=0.3, top_p=0.9, stop=["END", "STOP"], user="u-1", metadata={"trace": "t1"},
            response_format={"type": "json_object"}, seed=5)
    assert answer.choices[0].message.content == "ok"
    (turn,) = recording.turns
    assert (turn.agent, turn.model, turn.system, turn.surface) == ("rec", "gpt-4o", "Agent rules.\n\nBe terse.", "chat")
    assert [t.name for t in turn.tools] == ["get_weather"] and turn.tool_choice.mode == "none"
    limits = turn.limits
    assert (limits.max_output_tokens, limits.temperature, limits.top_p, limits.stop, limits.parallel_tool_calls) == (
        7, 0.3, 0.9, ["END", "STOP"], False)
    assert (turn.user, turn.metadata, turn.response_format) == ("u-1", {"trace": "t1"}, {"type": "json_object"})
    assert turn.session_key == "agent:rec:chat-user:u-1"


def test_failures_and_disconnects_are_logged(server, caplog):
    caplog.set_level(logging.INFO, logger="plugins.chat_completions")
    assert server.post({"model": "agent:broken", "messages": [{"role": "user", "content": "x"}]}).status_code == 500
    server.stream_lines({"model": "agent:flaky", "messages": [{"role": "user", "content": "a b c d"}]})
    marker = f"gone-{uuid.uuid4().hex} {LONG}"
    with server.raw.stream("POST", "/v1/chat/completions", json={
            "model": "agent:slow", "stream": True, "messages": [{"role": "user", "content": marker}]}) as resp:
        next(line for line in resp.iter_lines() if '"content":"gone-' in line)
    run = wait_for_run(server, lambda r: marker in r.turn.input[0].text)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(run.id in r.getMessage() for r in caplog.records):
        time.sleep(0.02)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "plugins.chat_completions"]
    assert any(level == "WARNING" and "failed (500 provider_error)" in m for level, m in messages), messages
    assert any(level == "WARNING" and "failed mid-stream (provider_error)" in m for level, m in messages), messages
    assert ("INFO", f"client disconnected; cancelled run {run.id}") in messages
