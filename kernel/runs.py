"""The run registry: every agent run has an id, a status, a cancel handle and an
event stream that several listeners can follow (each from any point)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kernel.agentloop import AgentLoop, has_loop_items
from kernel.agents import Agent
from kernel.errors import ApiError
from kernel.toolpolicy import UNFILTERED_KINDS, ToolPolicy
from kernel.tools import check_set_names, close_request_sets, model_tool_name
from kernel.types import (
    TERMINAL_KINDS,
    ApprovalRequest,
    ApprovalRequested,
    Failed,
    Finished,
    Item,
    Message,
    ProviderError,
    Reasoning,
    ReasoningDelta,
    RunError,
    RunEvent,
    ServerCallDone,
    ServerCallStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolListing,
    ToolResult,
    ToolsListed,
    Turn,
    Usage,
)

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("kernel.runs")

RunStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
FINISHED_RUN_TTL_SECONDS = 600.0
MAX_FINISHED_RUNS = 1000


@dataclass
class RunResult:
    """The outcome of a finished run, assembled from its events."""

    status: RunStatus
    output: list[Item]
    usage: Usage | None
    finish_reason: str | None
    error: RunError | None

    @property
    def text(self) -> str:
        return "".join(m.text for m in self.output if isinstance(m, Message))

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The calls the client must answer (server-side calls already ran)."""
        return [i for i in self.output if isinstance(i, ToolCall) and i.server is None]


class _Assembler:
    """Builds ordered output items from events as they stream.

    Text and reasoning deltas are collected as pieces and joined when the output is
    read: ``part.text += delta`` on an attribute copies the whole string every time,
    which makes a long answer quadratic in its length.
    """

    def __init__(self) -> None:
        self._items: list[Item] = []
        self.calls: dict[int, ToolCall] = {}
        self.usage: Usage | None = None
        # The item whose text grows (a TextPart of the trailing assistant message, or a
        # trailing Reasoning) and its pieces so far; None once another item starts.
        self._open: TextPart | Reasoning | None = None
        self._open_kind: type[RunEvent] | None = None
        self._pieces: list[str] = []

    @property
    def output(self) -> list[Item]:
        if self._open is not None:
            self._open.text = "".join(self._pieces)
        return self._items

    def _close(self) -> None:
        if self._open is not None:
            self._open.text = "".join(self._pieces)
            self._open = self._open_kind = None
            self._pieces = []

    def feed(self, ev: RunEvent) -> None:
        kind = type(ev)
        if kind is TextDelta or kind is ReasoningDelta:
            if self._open_kind is not kind:
                self._close()
                if kind is TextDelta:
                    part = TextPart("")
                    self._items.append(Message(role="assistant", parts=[part]))
                    self._open = part
                else:
                    reasoning = Reasoning()
                    self._items.append(reasoning)
                    self._open = reasoning
                self._open_kind = kind
            self._pieces.append(ev.text)  # type: ignore[union-attr]
        elif isinstance(ev, ToolCallStart):
            self._close()
            call = ToolCall(call_id=ev.call_id, name=ev.name, arguments="", tool_kind=ev.tool_kind)
            self.calls[ev.index] = call
            self._items.append(call)
        elif isinstance(ev, ToolCallDelta) and ev.index in self.calls:
            self.calls[ev.index].arguments += ev.arguments
        elif isinstance(ev, ToolCallDone):
            call = self.calls.get(ev.index)
            if call is None:
                self._close()
                call = ToolCall(call_id=ev.call_id, name=ev.name, arguments=ev.arguments, tool_kind=ev.tool_kind)
                self.calls[ev.index] = call
                self._items.append(call)
            call.arguments = ev.arguments
        elif isinstance(ev, Usage):
            self.usage = ev
        elif isinstance(ev, ServerCallStart):
            self._close()  # the text after a tool round is a new message
        elif isinstance(ev, ServerCallDone):
            self._close()
            self._items.append(ToolCall(call_id=ev.call_id, name=model_tool_name(ev.server, ev.name),
                                        arguments=ev.arguments, server=ev.server))
            output = ev.output if ev.error is None else f"Error: {ev.error}"
            self._items.append(ToolResult(call_id=ev.call_id, output=output or ""))
        elif isinstance(ev, ToolsListed):
            self._close()
            self._items.append(ToolListing(server=ev.server, tools=ev.tools, error=ev.error))
        elif isinstance(ev, ApprovalRequested):
            self._close()
            self._items.append(ApprovalRequest(id=ev.approval_id, server=ev.server, name=ev.name,
                                               arguments=ev.arguments))


class Run:
    """One agent run. Create through :meth:`RunRegistry.start`."""

    def __init__(self, registry: RunRegistry, turn: Turn, agent: Agent, *, background: bool,
                 principal: str | None, timeout: float | None) -> None:
        self.id = "run_" + os.urandom(16).hex()  # 32 random hex digits, like uuid4().hex at a quarter of the cost
        self.turn = turn
        self.agent = agent
        self.background = background
        self.principal = principal
        self.timeout = timeout
        self.status: RunStatus = "queued"
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.events_log: list[RunEvent] = []
        self._assembler = _Assembler()
        # Futures of listeners waiting for the next event: resolved and dropped on each
        # event (an Event set on every token costs a call even when nobody waits).
        self._waiters: list[asyncio.Future[None]] = []
        self._done = asyncio.Event()
        self._registry = registry
        self._cancel_requested = False
        self._task: asyncio.Task[None] | None = None
        self.finish_reason: str | None = None
        self.error: RunError | None = None
        # Called with each event as it is recorded (e.g. to persist an event log).
        self.listeners: list[Callable[[Run, RunEvent], None]] = []

    # ------------------------------------------------------------------ following

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def events(self, after: int = 0) -> AsyncIterator[RunEvent]:
        """Every event from position ``after`` on, then live ones until the terminal event.

        Any number of listeners may iterate at once; each sees every event once.
        """
        async for batch in self.event_batches(after):
            for ev in batch:
                yield ev

    async def event_batches(self, after: int = 0) -> AsyncIterator[list[RunEvent]]:
        """Like :meth:`events`, but every event available at each wake-up as one list.

        For writers that send what a provider produced in one read together (one pass
        through the HTTP stack instead of one per token).
        """
        position = after
        log_ = self.events_log
        while True:
            if position < len(log_):
                batch = log_[position:]
                for index, ev in enumerate(batch):
                    if ev.kind in TERMINAL_KINDS:
                        yield batch[:index + 1]
                        return
                position += len(batch)
                yield batch
                continue
            if self._done.is_set():
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def wait(self) -> RunResult:
        """Wait for the run to end and return its result."""
        await self._done.wait()
        return self.result()

    @property
    def usage(self) -> Usage | None:
        """The usage reported so far (final once :attr:`done`); cheaper than ``result().usage``."""
        return self._assembler.usage

    def result(self) -> RunResult:
        """The result so far (final once :attr:`done`)."""
        a = self._assembler
        return RunResult(self.status, a.output, a.usage, self.finish_reason, self.error)

    def cancel(self) -> bool:
        """Stop the run (and the provider's work). Returns False if it had already ended."""
        if self._done.is_set() or self._terminal_emitted:
            # Past its terminal event the run is only saving its session: let it finish.
            return False
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()
        return True

    @property
    def _terminal_emitted(self) -> bool:
        return bool(self.events_log) and self.events_log[-1].kind in TERMINAL_KINDS

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never runs _execute's cleanup; end the
        # run here so waiters and listeners are not left hanging.
        if self._done.is_set():
            return
        if task.cancelled():
            self.status = "cancelled"
            self.finish_reason = "cancelled"
            self._emit(Finished(reason="cancelled"))
        else:
            self._fail(RunError("run ended without a result", code="server_error"))
        self.finished_at = time.time()
        self._done.set()
        self._wake()
        self._registry._finished(self)

    # ------------------------------------------------------------------ execution

    def _emit(self, ev: RunEvent) -> None:
        self.events_log.append(ev)
        self._assembler.feed(ev)
        if self.listeners:
            for listener in self.listeners:
                try:
                    listener(self, ev)
                except Exception:  # a listener must never break the run
                    log.exception("run %s: event listener failed", self.id)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a follower that was cancelled while waiting
                waiter.set_result(None)

    async def _execute(self, kernel: Kernel) -> None:
        turn = self.turn
        key = turn.session_key
        # The session is the run's principal's own (kernel.sessions scopes every key by it).
        lock = kernel.sessions.lock(key, principal=self.principal) if key else None
        started = False
        try:
            try:
                if lock is not None:
                    await lock.acquire()
                started = True
                self.status = "in_progress"
                self.started_at = time.time()
                if key:
                    turn.history = [*await kernel.sessions.load(key, principal=self.principal), *turn.history]
                if self.timeout is not None:
                    async with asyncio.timeout(self.timeout):
                        await self._stream(kernel)
                else:
                    await self._stream(kernel)
            except TimeoutError:
                self._fail(RunError(f"run timed out after {self.timeout:g} seconds", code="timeout",
                                    type="timeout", status=504))
            except asyncio.CancelledError:
                self.status = "cancelled"
                self.finish_reason = "cancelled"
                self._emit(Finished(reason="cancelled"))
            finally:
                # A turn cancelled while still queued for its session (never started: the
                # model saw nothing) is withdrawn, not saved. Saving it would need the
                # session lock it never got (appended now, it would land before the turn
                # still running on the session, out of order); and the client was told the
                # turn was cancelled, so it knows to send it again.
                if key and started:
                    await self._persist(kernel, key)
        finally:
            if lock is not None and started:
                lock.release()
            if not self.events_log or self.events_log[-1].kind not in TERMINAL_KINDS:
                self._fail(RunError("run ended without a result", code="server_error"))
            self.finished_at = time.time()
            self._done.set()
            self._wake()
            self._registry._finished(self)

    async def _stream(self, kernel: Kernel) -> None:
        observers = kernel.observers
        if not observers.active:
            await self._call_provider(kernel)
            return
        tokens = observers.provider_call_started(self)
        try:
            await self._call_provider(kernel)
        finally:
            observers.provider_call_finished(self, tokens, self.error)

    async def _call_provider(self, kernel: Kernel) -> None:
        provider = kernel.provider_for(self.agent)
        turn = self.turn
        toolsets = [*kernel.tools.for_agent(self.agent), *turn.toolsets]
        if toolsets or has_loop_items(turn.history) or has_loop_items(turn.input):
            await AgentLoop(self, provider, toolsets, kernel.observers).drive()
            return
        policy = ToolPolicy(self.turn)
        stream = provider.stream(self.turn)
        emit = self._emit
        try:
            async for ev in stream:
                # Text, reasoning and usage (nearly every event) go straight through; the
                # policy sees tool calls, and the end of the run is handled here.
                if ev.kind not in UNFILTERED_KINDS:
                    ev = policy.apply(ev)
                    if ev is None:
                        continue
                    if isinstance(ev, Failed):
                        self._fail(ev.error)
                        return
                    if isinstance(ev, Finished):
                        self._finish(ev.reason)
                        return
                emit(ev)
        except ProviderError as exc:
            self._fail(exc.error)
            return
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as exc:
            log.exception("run %s: provider %r raised", self.id, self.agent.provider)
            self._fail(RunError(f"provider {self.agent.provider!r} failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            # Close the provider's generator now (not at garbage collection) when the run
            # stops reading early, so its cleanup (connections, model slots) runs at once.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("run %s: provider %r failed to close its stream", self.id, self.agent.provider)
        self._finish("tool_calls" if self._assembler.calls else "stop")

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.status = "incomplete" if reason in ("length", "content_filter") else "completed"
        self._emit(Finished(reason=reason))  # type: ignore[arg-type]

    def _fail(self, error: RunError) -> None:
        self.error = error
        self.status = "failed"
        self._emit(Failed(error))

    async def _persist(self, kernel: Kernel, key: str) -> None:
        items = [*self.turn.input, *self._assembler.output]
        try:
            await asyncio.shield(kernel.sessions.append(key, items, principal=self.principal))
        except Exception:
            log.exception("run %s: could not save session %r", self.id, key)


class RunRegistry:
    """Starts runs and keeps them findable while they run and for a while after."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.runs: dict[str, Run] = {}
        self._finished_order: deque[tuple[float, str]] = deque()

    def start(self, turn: Turn, *, background: bool = False, principal: str | None = None,
              timeout: float | None = None) -> Run:
        """Begin a run now and return it; the provider works in a task.

        Raises :class:`ApiError` 429 when the agent's provider is saturated, before
        anything is streamed, so endpoints can answer with ``Retry-After``.
        """
        observers = self.kernel.observers
        try:
            agent = self.kernel.agents.get(turn.agent)
            provider = self.kernel.provider_for(agent)
            admit = getattr(provider, "admit", None)
            if admit is not None:
                try:
                    admit()
                except ProviderError as exc:
                    err = exc.error
                    if observers.active:
                        observers.run_rejected(turn, agent, principal, err.status, err.code)
                    headers = {"Retry-After": err.retry_after_header()} if err.status == 429 else None
                    raise ApiError(err.status, err.message, type=err.type, code=err.code,
                                   headers=headers) from None
            if agent.tools or turn.toolsets:
                check_set_names(turn, list(agent.tools))
            _apply_agent_defaults(turn, agent)
            if observers.active:
                try:
                    observers.admit_run(turn, agent, principal)  # quotas: may raise a 429 ApiError
                except ApiError as exc:
                    observers.run_rejected(turn, agent, principal, exc.status, exc.code)
                    raise
        except BaseException:
            if turn.toolsets:  # no run will own (and close) the sets this request brought
                _close_later(close_request_sets(turn))
            raise
        run = Run(self, turn, agent, background=background, principal=principal, timeout=timeout)
        self.runs[run.id] = run
        # A fresh context, not a copy of the caller's: a run is not part of the request that
        # started it (it may outlive it), and a finished run kept here must not keep that
        # request's objects alive (at the cap that cost ~80 us of garbage collection per request).
        context = contextvars.Context()
        if observers.active:
            observers.run_started(run, context)
        run._task = asyncio.get_running_loop().create_task(run._execute(self.kernel), name=run.id,
                                                           context=context)
        run._task.add_done_callback(run._task_done)
        return run

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def active(self) -> list[Run]:
        return [r for r in self.runs.values() if not r.done]

    async def drain(self, grace: float) -> None:
        """Let running runs finish for up to ``grace`` seconds, then cancel the rest."""
        active = self.active()
        if not active:
            return
        log.info("waiting up to %gs for %d run(s) to finish", grace, len(active))
        waiters = [asyncio.ensure_future(r._done.wait()) for r in active]
        _, pending = await asyncio.wait(waiters, timeout=grace)
        for w in pending:
            w.cancel()
        for run in self.active():
            log.info("cancelling run %s at shutdown", run.id)
            run.cancel()
        tasks = [r._task for r in active if r._task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _finished(self, run: Run) -> None:
        if self.kernel.observers.active:
            self.kernel.observers.run_finished(run)
        # Runs are forgotten in the order they finished: a FIFO makes this O(1) amortised
        # (scanning every kept run on each finish cost ~0.4 ms per request at the cap).
        now = time.time()
        order = self._finished_order
        order.append((run.finished_at or now, run.id))
        while order and (len(order) > MAX_FINISHED_RUNS or now - order[0][0] > FINISHED_RUN_TTL_SECONDS):
            self.runs.pop(order.popleft()[1], None)


def _apply_agent_defaults(turn: Turn, agent: Agent) -> None:
    """The agent's instructions come first; its options fill limits the request left open."""
    if agent.instructions:
        turn.system = f"{agent.instructions}\n\n{turn.system}" if turn.system else agent.instructions
    limits = turn.limits
    # Validated at load (kernel.config.AgentOptions): names and types are the Limits' own.
    for name, value in agent.options.items():
        if getattr(limits, name, None) is None:
            setattr(limits, name, value)
    if turn.model is None:
        turn.model = agent.model


_closing: set[asyncio.Task[None]] = set()


def _close_later(closing: Coroutine[Any, Any, None]) -> None:
    """Run ``closing`` in the background (kept referenced until done)."""
    task = asyncio.get_running_loop().create_task(closing)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
