"""Fixtures for the Chat Completions tests: one live server per module, strict SDK validation.

Every 200 answer of ``/v1/chat/completions`` that passes through :attr:`Server.sdk` or
:attr:`Server.http` is validated with the openai SDK's own ``ChatCompletion`` /
``ChatCompletionChunk`` models in strict mode (the SDK itself builds its objects
without validation, so an SDK call alone proves little about the shape).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, build_app, default_config, merge, serve_in_thread

# Agents every live test can route to with model="agent:<name>".
CHAT_CONFIG: dict[str, Any] = {
    "plugins": {"chat_completions": {"enabled": True, "max_body_bytes": 200_000}},
    "providers": {
        "transcript": {"kind": "echo", "mode": "transcript", "accepts_images": True},
        "slow": {"kind": "echo", "delay_seconds": 0.05},
        "broken": {"kind": "echo", "fail_after_words": 0},
        "flaky": {"kind": "echo", "fail_after_words": 2},
    },
    "agents": {
        "transcript": {"provider": "transcript", "instructions": "Be brief."},
        "slow": {"provider": "slow"},
        "broken": {"provider": "broken"},
        "flaky": {"provider": "flaky"},
    },
}


class Server:
    """A running gateway: its base URL, the app (to look at the kernel) and ready clients."""

    def __init__(self, base: str, app: Any) -> None:
        self.base = base
        self.app = app
        self.kernel = app.extensions["kernel"]
        self.validated = 0  # completions and chunks checked by the response hook
        hooks = {"response": [self._validate_response]}
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=30,
                                 http_client=httpx.Client(event_hooks=hooks))
        self.http = httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30, event_hooks=hooks)
        # Unchecked, for tests that stop reading a stream half-way (the hook reads it all).
        self.raw = httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30)

    def _validate_response(self, response: httpx.Response) -> None:
        """Check every successful chat answer, whole or streamed, against the SDK's models."""
        if response.request.url.path != "/v1/chat/completions" or response.status_code != 200:
            return
        response.read()  # buffered: the caller still iterates the same bytes afterwards
        self.validated += validate_wire(response.headers["content-type"], response.text)

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        """POST /v1/chat/completions with the bearer token."""
        return self.http.post("/v1/chat/completions", json=body, **kwargs)

    def stream_lines(self, body: dict[str, Any], **kwargs: Any) -> list[str]:
        """POST a streaming request and return its ``data:`` payloads (``[DONE]`` included)."""
        with self.http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, **kwargs) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"].startswith("text/event-stream")
            return [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The plugin enabled with the agents of :data:`CHAT_CONFIG`, served by a real Hypercorn."""
    tmp: Path = tmp_path_factory.mktemp("chat")
    app = build_app(merge(default_config(tmp / "state"), CHAT_CONFIG), tmp / "plugins.toml")
    with serve_in_thread(app) as base:
        srv = Server(base, app)
        yield srv
        srv.http.close()
        srv.raw.close()
        srv.sdk.close()


def strict_validate(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` with one of the SDK's models in strict mode, allowing no unknown keys."""
    if isinstance(data, str | bytes):
        data = json.loads(data)
    parsed = model.model_validate(data, strict=True)
    _no_extras(parsed, model.__name__)
    return parsed


def validate_wire(content_type: str, text: str) -> int:
    """Validate a whole body or an SSE stream; returns how many objects were checked."""
    if content_type.startswith("application/json"):
        strict_validate(ChatCompletion, text)
        return 1
    assert content_type.startswith("text/event-stream"), content_type
    events = [e for e in text.split("\n\n") if e.strip()]
    payloads = [e.removeprefix("data: ") for e in events if not e.startswith(":")]  # ": ping" comments
    assert all(e.startswith("data: ") for e in events if not e.startswith(":")), events
    assert payloads[-1] == "[DONE]" and "[DONE]" not in payloads[:-1], payloads[-3:]
    for i, payload in enumerate(payloads[:-1]):
        data = json.loads(payload)
        if "error" in data:  # a mid-stream failure: OpenAI's error object, last before [DONE]
            assert i == len(payloads) - 2 and set(data) == {"error"}, payloads
            assert set(data["error"]) == {"message", "type", "param", "code"}, data
        else:
            strict_validate(ChatCompletionChunk, data)
    return len(payloads) - 1


def _no_extras(model: BaseModel, where: str) -> None:
    """The SDK models allow unknown keys; a faithful encoder sends none, at any depth."""
    extra = model.model_extra or {}
    assert not extra, f"{where}: keys the SDK model does not define: {sorted(extra)}"
    for name in type(model).model_fields:
        _walk(getattr(model, name), f"{where}.{name}")


def _walk(value: Any, where: str) -> None:
    if isinstance(value, BaseModel):
        _no_extras(value, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{where}[{i}]")


@pytest.fixture
def strict() -> Callable[[type[BaseModel], Any], Any]:
    """``strict(ChatCompletion, raw_json_dict)``: validate with the SDK's model in strict mode."""

    return strict_validate
