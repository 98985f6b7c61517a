"""The observer seam (kernel.observe): what an observer sees, in order, and that it cannot break a request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from quart import Quart

from kernel import ApiError, Observer, RequestInfo, hookimpl
from kernel.observe import ObserveMiddleware, Observers
from kernel.testing import AUTH_HEADERS

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="")


class Recorder(Observer):
    """Records every call; can refuse runs for one principal."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse_runs = False

    def request_started(self, info: RequestInfo) -> None:
        self.calls.append(("request_started", info.method, info.route, info.plugin, info.principal))

    def response_headers(self, info: RequestInfo, headers: Any) -> None:
        headers["x-observed"] = "yes"

    def response_started(self, info: RequestInfo) -> None:
        self.calls.append(("response_started", info.status, info.streaming))

    def request_finished(self, info: RequestInfo) -> None:
        self.calls.append(("request_finished", info.route, info.status, info.completed))

    def admit_run(self, turn: Any, agent: Any, principal: str | None) -> None:
        self.calls.append(("admit_run", agent.name, principal))
        if self.refuse_runs:
            raise ApiError(429, "no runs for you", code="rate_limit_exceeded", headers={"Retry-After": "7"})

    def run_rejected(self, turn: Any, agent: Any, principal: str | None, status: int, code: str | None) -> None:
        self.calls.append(("run_rejected", status, code))

    def run_started(self, run: Any, context: contextvars.Context) -> None:
        context.run(MARK.set, run.id)  # seen by the run's own task
        self.calls.append(("run_started", run.agent.name))

    def provider_call_started(self, run: Any) -> Any:
        self.calls.append(("provider_call_started", MARK.get() == run.id))
        return "token"

    def provider_call_finished(self, run: Any, token: Any, error: Any) -> None:
        self.calls.append(("provider_call_finished", token, error))

    def run_finished(self, run: Any) -> None:
        self.calls.append(("run_finished", run.status))

    def store_write(self, label: str, items: int, started: float, seconds: float, ok: bool) -> None:
        self.calls.append(("store_write", label, items, ok))


class Broken(Observer):
    def request_finished(self, info: RequestInfo) -> None:
        raise RuntimeError("observer bug")

    def run_finished(self, run: Any) -> None:
        raise RuntimeError("observer bug")


def observed_app(make_app: Callable[..., Quart], *observers: Observer) -> Quart:
    class Adds:
        @hookimpl
        def register_routes(self, kernel: Any, settings: Any) -> None:
            for o in observers:
                kernel.observers.add(o)

    return make_app({"plugins": {"chat_completions": {"enabled": True}}}, extra_plugins={"adds": Adds()})


def post_chat(base: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={**AUTH_HEADERS, **headers}, timeout=30,
                      json={"model": "main", "messages": [{"role": "user", "content": "hi"}]})


def test_an_observer_sees_request_and_run_boundaries_in_order(make_app: Callable[..., Quart],
                                                              live_server: Any) -> None:
    recorder = Recorder()
    with live_server(observed_app(make_app, recorder)) as base:
        answer = post_chat(base, **{"x-session-key": "seam"})
        assert answer.status_code == 200 and answer.headers["x-observed"] == "yes"
    started = ("request_started", "POST", "/v1/chat/completions", "chat_completions", "default")
    calls = recorder.calls[recorder.calls.index(started):]  # after live_server's health probe
    calls = [c for c in calls if c[:2] != ("request_finished", "/-/health")]
    calls = [c for c in calls if c[:2] != ("store_write", "leases")]  # the lease's heartbeat and release
    names = [c[0] for c in calls]
    assert names.index("admit_run") < names.index("run_started") < names.index("provider_call_started")
    assert ("provider_call_started", True) in calls  # the run's context carried the mark
    assert ("provider_call_finished", "token", None) in calls
    assert ("run_finished", "completed") in calls
    assert ("store_write", "sessions", 2, True) in calls  # the turn: the user message and the answer
    assert calls[-1] == ("request_finished", "/v1/chat/completions", 200, True)
    assert names.index("response_started") < names.index("request_finished")


def test_an_observer_may_refuse_a_run(make_app: Callable[..., Quart], live_server: Any) -> None:
    recorder = Recorder()
    recorder.refuse_runs = True
    with live_server(observed_app(make_app, recorder)) as base:
        refused = post_chat(base)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "7"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert ("run_rejected", 429, "rate_limit_exceeded") in recorder.calls
    assert not any(c[0] == "run_started" for c in recorder.calls)


class Preparer(Observer):
    """Awaits before request_started; what it sets in the context is seen by the request's later calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def prepare_request(self, info: RequestInfo) -> None:
        await asyncio.sleep(0)  # real I/O would be here (a store round trip)
        if info.headers.get("x-refuse"):
            raise ApiError(429, "counted and refused", code="rate_limit_exceeded", headers={"Retry-After": "3"})
        MARK.set(f"prepared {info.route}")

    def request_started(self, info: RequestInfo) -> None:
        self.seen.append(("request_started", MARK.get()))

    def admit_run(self, turn: Any, agent: Any, principal: str | None) -> None:
        self.seen.append(("admit_run", MARK.get()))


def test_prepare_request_is_awaited_first_in_the_requests_context(make_app: Callable[..., Quart],
                                                                  live_server: Any) -> None:
    preparer, recorder = Preparer(), Recorder()
    app = observed_app(make_app, recorder, preparer)
    assert app.extensions["kernel"].observers.prepares
    with live_server(app) as base:
        assert post_chat(base).status_code == 200
        refused = post_chat(base, **{"x-refuse": "1"})
    seen = [c for c in preparer.seen if c[1] != "prepared /-/health"]  # live_server's probes
    assert seen == [("request_started", "prepared /v1/chat/completions"),
                    ("admit_run", "prepared /v1/chat/completions")]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["message"] == "counted and refused"
    # Refused before request_started: no observer saw the request start, every one saw it end.
    assert ("request_finished", "/v1/chat/completions", 429, True) in recorder.calls
    # Without an observer that overrides it, the kernel awaits nothing.
    observers = Observers()
    observers.add(Recorder())
    assert not observers.prepares


def test_a_failing_observer_breaks_nothing(make_app: Callable[..., Quart], live_server: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="kernel.observe"), \
            live_server(observed_app(make_app, Broken(), recorder)) as base:
        assert post_chat(base).status_code == 200
        assert post_chat(base).status_code == 200
    assert sum(c == ("run_finished", "completed") for c in recorder.calls) == 2  # later observers still called
    assert "observer bug" in caplog.text


def test_no_observers_no_middleware(make_app: Callable[..., Quart]) -> None:
    app = make_app({"plugins": {"chat_completions": {"enabled": True}}})
    assert not app.extensions["kernel"].observers
    assert not isinstance(app.asgi_app, ObserveMiddleware)
    assert isinstance(observed_app(make_app, Recorder()).asgi_app, ObserveMiddleware)


def test_limits_without_the_plugin_are_reported(make_app: Callable[..., Quart],
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kernel"):
        make_app({"kernel": {"auth": {"keys": {"k": {"secret": "k-secret-123", "requests_per_minute": 5}}}}})
    assert "keys k set limits" in caplog.text and "observability" in caplog.text


class ToolRecorder(Observer):
    """Records the agent loop's server-side tool calls; optionally fails in every tool hook."""

    def __init__(self, broken: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.broken = broken

    def tool_call_started(self, run: Any, toolset: Any, tool: str, call_id: str, arguments: str) -> Any:
        if self.broken:
            raise RuntimeError("observer bug")
        self.calls.append(("started", toolset.name, tool, arguments))
        return f"token-{call_id}"

    def tool_call_finished(self, run: Any, token: Any, output: Any) -> None:
        if self.broken:
            raise RuntimeError("observer bug")
        self.calls.append(("finished", token.startswith("token-"), output.text, output.is_error))


async def test_observers_see_each_server_side_tool_call(make_app: Callable[..., Quart]) -> None:
    from kernel import Message, TextPart, ToolInfo, ToolKind, ToolOutput, Turn
    from kernel.app import get_kernel

    class Caps:
        def __init__(self, name: str) -> None:
            self.name, self.timeout_seconds = name, 5.0

        async def list_tools(self) -> list[ToolInfo]:
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            return [ToolInfo("upper", "Upper-case text", schema)]

        async def call(self, name: str, arguments: dict[str, Any], context: Any) -> ToolOutput:
            if arguments["text"] == "boom":
                raise ValueError("the tool broke")
            return ToolOutput(arguments["text"].upper())

        async def aclose(self) -> None:
            pass

    recorder, broken = ToolRecorder(), ToolRecorder(broken=True)

    class Tools:
        @hookimpl
        def register_tools(self) -> list[ToolKind]:
            return [ToolKind(kind="caps", factory=lambda name, options, kernel: Caps(name))]

        @hookimpl
        def register_routes(self, kernel: Any, settings: Any) -> list[Any]:
            kernel.observers.add(broken)  # first: its failures must not reach the recorder or the run
            kernel.observers.add(recorder)
            return []

    app = make_app({"tools": {"caps": {"kind": "caps"}}, "agents": {"main": {"provider": "echo", "tools": ["caps"]}}},
                   extra_plugins={"tools": Tools()})
    kernel = get_kernel(app)
    for text in ("hi", "boom"):
        turn = Turn(agent="main", input=[Message("user", [TextPart(f'/call caps__upper {{"text": "{text}"}}')])])
        await kernel.runs.start(turn).wait()
    assert recorder.calls[0] == ("started", "caps", "upper", '{"text": "hi"}')
    assert recorder.calls[1] == ("finished", True, "HI", False)
    assert recorder.calls[2] == ("started", "caps", "upper", '{"text": "boom"}')
    assert recorder.calls[3][0:2] == ("finished", True) and recorder.calls[3][3] is True
    assert "the tool broke" in recorder.calls[3][2]
    assert len(recorder.calls) == 4
