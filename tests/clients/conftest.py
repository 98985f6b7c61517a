"""Third-party clients (installed from PyPI, unmodified) against a real gateway.

Each test drives one client library over HTTP to a Hypercorn server on loopback: a
text turn and a tool round trip (the client defines a function tool, the echo
provider ``tooler`` calls it, the client runs it and sends the result, the final answer
is the tool's output). Nothing may leave the machine, so the clients' telemetry is off
and LiteLLM reads its bundled model cost map instead of fetching it.

Every request the clients send is recorded (:class:`RequestRecorder`); with
``CAPTURE_CLIENT_REQUESTS=1`` the tests write them to
``tests/plugins/openresponses/client_requests/`` as the fixtures the replay test uses.
"""

from __future__ import annotations

import os

# Before any client library is imported (pytest imports this conftest first).
os.environ["LITELLM_TELEMETRY"] = "False"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["LANGCHAIN_TRACING_V2"] = "false"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
    os.environ.pop(_name, None)  # every client is given the gateway explicitly

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from kernel.testing import TEST_TOKEN, build_app, default_config, merge, serve_in_thread  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "plugins" / "openresponses" / "client_requests"
CAPTURE = os.environ.get("CAPTURE_CLIENT_REQUESTS") == "1"

CONFIG: dict[str, Any] = {
    "plugins": {"openresponses": {"enabled": True}, "chat_completions": {"enabled": True}},
    "providers": {
        "words": {"kind": "echo"},
        "tooler": {"kind": "echo", "call_tool": "get_weather"},
    },
    "agents": {"words": {"provider": "words"}, "tooler": {"provider": "tooler"}},
}


def get_weather(city: str) -> str:
    """The tool every client defines: the weather in a city."""
    return f"It is sunny in {city}."


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    status: int = 0


@dataclass
class RequestRecorder:
    """ASGI middleware around the app: keeps every POST's path, JSON body and status."""

    inner: Any
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            record = Recorded(scope["path"], json.loads(raw))
            self.requests.append(record)
        except ValueError:
            record = Recorded(scope["path"], {})
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.inner(scope, replay, watch)

    def take(self, path: str) -> list[dict[str, Any]]:
        """The bodies sent to ``path`` since the last take (all must have succeeded)."""
        taken = [r for r in self.requests if r.path == path]
        self.requests = [r for r in self.requests if r.path != path]
        failed = [(r.status, r.body) for r in taken if r.status != 200]
        assert not failed, f"requests to {path} failed: {failed}"
        return [r.body for r in taken]


@dataclass
class Gateway:
    base: str
    recorder: RequestRecorder

    @property
    def v1(self) -> str:
        return f"{self.base}/v1"

    token: str = TEST_TOKEN


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("clients")
    app = build_app(merge(default_config(tmp / "state"), CONFIG), tmp / "plugins.toml")
    recorder = RequestRecorder(app.asgi_app)
    app.asgi_app = recorder  # type: ignore[method-assign]
    with serve_in_thread(app) as base:
        yield Gateway(base, recorder)


def save_fixture(name: str, client: str, bodies: list[dict[str, Any]], path: str = "/v1/responses") -> None:
    """With CAPTURE_CLIENT_REQUESTS=1: write what ``client`` sent as ``<name>.json``."""
    if not CAPTURE:
        return
    doc = {"client": client, "path": path, "requests": bodies}
    (FIXTURES / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    return host is None or str(host) in LOOPBACK_NAMES or str(host).startswith("127.")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test if a client library tries to reach anything but loopback
    (telemetry, a model cost map, a tokenizer download ...)."""
    import socket

    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            attempts.append(f"connect {address[0]}")
            raise OSError(f"test guard: no network beyond loopback ({address[0]})")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(host):
            attempts.append(f"resolve {host}")
            raise socket.gaierror(f"test guard: no network beyond loopback ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"a client tried to reach the network: {attempts}"
