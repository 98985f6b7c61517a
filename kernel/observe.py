"""The observer seam: plugins see every request and run boundary without wrapping views.

An :class:`Observer` is a plain object with synchronous methods the kernel calls at
fixed points (request start and end, run admission, start and end, provider calls,
server-side tool calls of the agent loop, store writes). A plugin adds one with
``kernel.observers.add(obs)`` (typically in ``register_routes``); with none added the
kernel skips every call site, so the seam costs nothing when unused. Observer methods
must be quick and must not block: they run on the event loop, inside the request or
the run. The one coroutine, :meth:`Observer.prepare_request`, is awaited before
``request_started`` for the I/O a later synchronous call needs (a quota counted in a
shared store); it, :meth:`Observer.request_started` and :meth:`Observer.admit_run` may
raise (an :class:`kernel.errors.ApiError`, e.g. a 429 for a quota); an exception from any
other method is logged and ignored, so an observer can never break a request or a run.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel.streaming import WATCH_SCOPE_KEY, ResponseWatch, run_client_left

if TYPE_CHECKING:
    from kernel.agents import Agent
    from kernel.runs import Run
    from kernel.tools import ToolOutput, ToolSet
    from kernel.types import RunError, Turn

log = logging.getLogger("kernel.observe")

# The ASGI scope key under which the request's RequestInfo travels.
SCOPE_KEY = "kernel.observe"


@dataclass(slots=True)
class RequestInfo:
    """One HTTP exchange as observers see it. Bounded fields only: no query, no body."""

    method: str
    path: str
    started: float  # time.perf_counter() when the request arrived
    headers: Any = None  # the request headers (read-only; credentials included, never log them)
    route: str = ""  # the matched URL rule ("/v1/responses/<response_id>"), "" when none matched
    plugin: str = ""  # the plugin owning the route ("kernel" for the kernel's own)
    principal: str | None = None  # set once authenticated
    status: int | None = None  # the status sent, None while no response started
    streaming: bool = False  # the response is text/event-stream
    completed: bool = False  # the whole response body was sent
    finished: float | None = None  # time.perf_counter() at the end of the exchange
    #: Per-observer scratch space, keyed by the observer's own choice of name.
    state: dict[str, Any] = field(default_factory=dict)


class Observer:
    """Base class with every method a no-op: override the ones you need."""

    #: Overridden methods this instance does not need after all (decided when it is built,
    #: e.g. no key has limits): the kernel skips them, as it skips the ones not overridden.
    unused_hooks: frozenset[str] = frozenset()

    async def prepare_request(self, info: RequestInfo) -> None:
        """Awaited once the request is authenticated and routed, before :meth:`request_started`
        (HTTP only, in the request's own context: a context variable set here is seen by the
        view and by :meth:`admit_run`). For I/O the synchronous calls cannot do, such as
        counting a request in a store shared by several processes; keep it to one round trip.
        Override it only when needed: with no observer overriding it the kernel awaits nothing.

        May raise :class:`kernel.errors.ApiError` to refuse the request.
        """

    def request_started(self, info: RequestInfo) -> None:
        """The request was authenticated and routed (``info.route`` / ``principal`` set).

        May raise :class:`kernel.errors.ApiError` to refuse it (e.g. 429).
        """

    def response_headers(self, info: RequestInfo, headers: MutableMapping[str, str]) -> None:
        """The response's headers may still be changed (called from ``after_request``)."""

    def response_started(self, info: RequestInfo) -> None:
        """The status line went out (``info.status`` and ``info.streaming`` set)."""

    def request_finished(self, info: RequestInfo) -> None:
        """The exchange ended: delivered in full (``info.completed``) or abandoned."""

    def admit_run(self, turn: Turn, agent: Agent, principal: str | None) -> None:
        """A run is about to start. May raise :class:`kernel.errors.ApiError` to refuse it.

        Every admitted run is later seen by :meth:`run_started` and :meth:`run_finished`.
        """

    def run_rejected(self, turn: Turn, agent: Agent, principal: str | None, status: int, code: str | None) -> None:
        """A run was refused before it started (a provider's queue was full, or a quota)."""

    def run_started(self, run: Run, context: contextvars.Context) -> None:
        """A run began. ``context`` is the one its task will run in: values set through
        ``context.run(...)`` (e.g. the current trace span) are seen by the run's code."""

    def run_finished(self, run: Run) -> None:
        """A run ended (``run.status``, ``run.result().usage`` are final)."""

    def provider_call_started(self, run: Run) -> Any:
        """The run's provider is about to be called (in the run's task). The value returned
        is handed back to :meth:`provider_call_finished`."""

    def provider_call_finished(self, run: Run, token: Any, error: RunError | None) -> None:
        """The provider call ended (``error`` set when it failed)."""

    def tool_call_started(self, run: Run, toolset: ToolSet, tool: str, call_id: str, arguments: str) -> Any:
        """The agent loop is about to run server-side tool ``tool`` of ``toolset`` for ``run``
        (in the call's own task). ``arguments`` is the model's JSON text (client content:
        never log it). The value returned is handed back to :meth:`tool_call_finished`."""

    def tool_call_finished(self, run: Run, token: Any, output: ToolOutput) -> None:
        """The tool call ended: ``output.is_error`` for a failure (the tool's error, bad
        arguments, a timeout, or the run cancelled)."""

    def provider_retry(self, provider: str, kind: str) -> None:
        """A provider retried a call to its backend after a fault of ``kind``."""

    def outgoing_headers(self, headers: dict[str, str]) -> None:
        """Add headers to a provider's request to its backend (e.g. W3C ``traceparent``)."""

    def store_write(self, label: str, items: int, started: float, seconds: float, ok: bool) -> None:
        """A store transaction of ``items`` items labelled ``label`` ended after ``seconds``
        (``started`` is its ``time.time()`` start)."""


class Observers:
    """The kernel's observers; each call goes to every observer in the order they were added."""

    def __init__(self) -> None:
        self._all: list[Observer] = []
        # Per method, the bound methods of the observers that override it (the base class's
        # no-ops are skipped: most calls happen several times per request).
        self._bound: dict[str, list[Callable[..., Any]]] = {}
        #: True once an observer is added. Call sites test this attribute rather than the
        #: object's truth (``__bool__`` is a Python call; they run several times a request).
        self.active = False
        #: True when an observer overrides :meth:`Observer.prepare_request` (and needs it).
        self.prepares = False

    def __bool__(self) -> bool:
        return self.active

    def __iter__(self) -> Any:
        return iter(self._all)

    def add(self, observer: Observer) -> None:
        """Register an observer (before the app serves its first request)."""
        self._all.append(observer)
        self.active = True
        names = [n for n in vars(Observer) if not n.startswith("_") and callable(getattr(Observer, n))]
        self._bound = {n: [getattr(o, n) for o in self._all
                           if getattr(type(o), n, None) is not getattr(Observer, n)
                           and n not in getattr(o, "unused_hooks", ())]
                       for n in names}
        self.prepares = bool(self._bound["prepare_request"])

    # Calls that may refuse: exceptions propagate.

    async def prepare_request(self, info: RequestInfo) -> None:
        for method in self._bound["prepare_request"]:
            await method(info)  # awaited in turn, not gathered: context variables set there stay set

    def request_started(self, info: RequestInfo) -> None:
        for method in self._bound["request_started"]:
            method(info)

    def admit_run(self, turn: Turn, agent: Agent, principal: str | None) -> None:
        for method in self._bound["admit_run"]:
            method(turn, agent, principal)

    # Notifications: an observer's failure is logged, never raised.

    def response_headers(self, info: RequestInfo, headers: MutableMapping[str, str]) -> None:
        for method in self._bound["response_headers"]:  # _each's loop, inlined: called for every request
            try:
                method(info, headers)
            except Exception:
                log.exception("observer %r failed in response_headers", getattr(method, "__self__", method))

    def response_started(self, info: RequestInfo) -> None:
        for method in self._bound["response_started"]:  # _each's loop, inlined: called for every request
            try:
                method(info)
            except Exception:
                log.exception("observer %r failed in response_started", getattr(method, "__self__", method))

    def request_finished(self, info: RequestInfo) -> None:
        for method in self._bound["request_finished"]:  # _each's loop, inlined: called for every request
            try:
                method(info)
            except Exception:
                log.exception("observer %r failed in request_finished", getattr(method, "__self__", method))

    def run_rejected(self, turn: Turn, agent: Agent, principal: str | None, status: int, code: str | None) -> None:
        self._each("run_rejected", turn, agent, principal, status, code)

    def run_started(self, run: Run, context: contextvars.Context) -> None:
        for method in self._bound["run_started"]:  # _each's loop, inlined: called for every request
            try:
                method(run, context)
            except Exception:
                log.exception("observer %r failed in run_started", getattr(method, "__self__", method))

    def run_finished(self, run: Run) -> None:
        for method in self._bound["run_finished"]:  # _each's loop, inlined: called for every request
            try:
                method(run)
            except Exception:
                log.exception("observer %r failed in run_finished", getattr(method, "__self__", method))

    def provider_call_started(self, run: Run) -> list[Any]:
        tokens = []
        for o in self._all:
            try:
                tokens.append(o.provider_call_started(run))
            except Exception:
                log.exception("observer %r failed in provider_call_started", o)
                tokens.append(None)
        return tokens

    def provider_call_finished(self, run: Run, tokens: list[Any], error: RunError | None) -> None:
        for o, token in zip(self._all, tokens, strict=False):
            try:
                o.provider_call_finished(run, token, error)
            except Exception:
                log.exception("observer %r failed in provider_call_finished", o)

    def tool_call_started(self, run: Run, toolset: ToolSet, tool: str, call_id: str, arguments: str) -> list[Any]:
        tokens = []
        for o in self._all:
            try:
                tokens.append(o.tool_call_started(run, toolset, tool, call_id, arguments))
            except Exception:
                log.exception("observer %r failed in tool_call_started", o)
                tokens.append(None)
        return tokens

    def tool_call_finished(self, run: Run, tokens: list[Any], output: ToolOutput) -> None:
        for o, token in zip(self._all, tokens, strict=False):
            try:
                o.tool_call_finished(run, token, output)
            except Exception:
                log.exception("observer %r failed in tool_call_finished", o)

    def provider_retry(self, provider: str, kind: str) -> None:
        self._each("provider_retry", provider, kind)

    def outgoing_headers(self) -> dict[str, str]:
        """Headers every observer wants on a provider's backend request ({} when none)."""
        headers: dict[str, str] = {}
        self._each("outgoing_headers", headers)
        return headers

    def store_write(self, label: str, items: int, started: float, seconds: float, ok: bool) -> None:
        self._each("store_write", label, items, started, seconds, ok)

    def _each(self, name: str, *args: Any) -> None:
        for method in self._bound[name]:
            try:
                method(*args)
            except Exception:
                log.exception("observer %r failed in %s", getattr(method, "__self__", method), name)


class ObserveMiddleware(ResponseWatch):
    """ASGI middleware: a :class:`RequestInfo` per HTTP request, ended however it ends.

    Used by ``create_app`` in place of :class:`kernel.streaming.ResponseWatch` when
    observers exist (it does that job too, so a streamed chunk passes one wrapper, not
    two). The view side fills in the route and principal; this wrapper sees the status
    line, whether the body was sent in full, and the true end of a streamed response
    (``after_request`` runs before it).
    """

    def __init__(self, app: Any, observers: Observers) -> None:
        super().__init__(app)
        self.observers = observers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(method=scope.get("method", ""), path=scope.get("path", ""), started=time.perf_counter())
        observers = self.observers
        callbacks: list[Callable[[], None]] = []

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.body":  # the common case first: one per chunk
                await send(message)
                if not message.get("more_body", False):
                    info.completed = True
                return
            if message["type"] == "http.response.start":
                info.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        info.streaming = value.startswith(b"text/event-stream")
                        break
                await send(message)
                observers.response_started(info)
                return
            await send(message)

        try:
            await self.app({**scope, SCOPE_KEY: info, WATCH_SCOPE_KEY: callbacks}, receive, observed_send)
        finally:
            info.finished = time.perf_counter()
            if not info.completed:
                run_client_left(callbacks)
            observers.request_finished(info)
