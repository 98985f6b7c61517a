"""Fixtures for the Chat Completions tests: one live server per module, strict SDK validation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
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
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=30)
        self.http = httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30)

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
        srv.sdk.close()


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

    def check(model: type[BaseModel], data: Any) -> Any:
        if isinstance(data, str | bytes):
            data = json.loads(data)
        parsed = model.model_validate(data, strict=True)
        _no_extras(parsed, model.__name__)
        return parsed

    return check
