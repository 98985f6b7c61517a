"""The agent loop: provider turn -> server-side tool calls -> results -> next provider turn.

Protocol-neutral and owned by the kernel. A run uses it when its agent has tool sets
(``[agents.NAME] tools``), when its request brought some (``Turn.toolsets``), or when
its conversation carries loop items (tool listings, approvals). The loop ends when the
model answers text, calls a client tool, asks for an approval, or the limits are spent
(then the model gets one last turn without server tools, so it still answers). Client
function tools reach the client exactly as without the loop.

Everything the loop does streams as neutral events (:class:`ToolsListed`,
:class:`ServerCallStart`, :class:`ServerCallDone`, :class:`ApprovalRequested`) so every
endpoint can show it; usage is summed over all provider turns and sent once at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kernel.logfmt import escape_control as safe
from kernel.toolpolicy import ToolPolicy
from kernel.tools import (
    DEFAULT_LIST_TIMEOUT,
    ToolContext,
    ToolInfo,
    ToolOutput,
    ToolSet,
    describe_error,
    find_name_clash,
    model_tool_name,
)
from kernel.types import (
    LOOP_ITEM_TYPES,
    ApprovalRequest,
    ApprovalRequested,
    ApprovalResponse,
    Failed,
    Finished,
    Item,
    Message,
    ProviderError,
    ReasoningDelta,
    RunError,
    ServerCallDone,
    ServerCallStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolListing,
    ToolResult,
    ToolsListed,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from kernel.observe import Observers
    from kernel.runs import Run
    from kernel.types import Provider

log = logging.getLogger("kernel.agentloop")

# At most this many server-side calls of one model turn run at once.
MAX_PARALLEL_CALLS = 8
# A tool's output is cut to this many characters (with a note) before the model sees it.
MAX_OUTPUT_CHARS = 64 * 1024
# A call slower than this is logged when it ends.
SLOW_CALL_SECONDS = 5.0
DENIED_OUTPUT = "The user denied this tool call."


def has_loop_items(items: list[Item]) -> bool:
    """Whether a conversation carries items only the loop understands."""
    return any(isinstance(item, LOOP_ITEM_TYPES) for item in items)


@dataclass(slots=True)
class _Entry:
    toolset: ToolSet
    info: ToolInfo


@dataclass(slots=True)
class _Call:
    call_id: str
    model_name: str
    arguments: str


class _ListingFailed(Exception):
    """A listing the endpoint's pre-check already saw fail (its message)."""


def truncate_output(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """``text`` cut to ``limit`` characters with a note saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[output truncated: {len(text) - limit} of {len(text)} characters omitted]"


class AgentLoop:
    """Drives one run through as many provider turns as its tool calls need."""

    def __init__(self, run: Run, provider: Provider, toolsets: list[ToolSet],
                 observers: Observers | None = None) -> None:
        self.run = run
        # Told of every server-side tool call (spans, metrics); None or empty: not called at all.
        self.observers = observers if observers is not None and observers.active else None
        self.provider = provider
        self.toolsets = toolsets
        self.turn = run.turn
        self.catalog: dict[str, _Entry] = {}
        self.usage = Usage()
        self.saw_usage = False
        self.calls_made = 0
        self.iterations = 0
        limits = self.turn.limits
        self.budget = limits.max_tool_calls if limits.max_tool_calls is not None else run.agent.max_tool_iterations
        self.parallel = MAX_PARALLEL_CALLS if limits.parallel_tool_calls else 1

    # ------------------------------------------------------------------ entry point

    async def drive(self) -> None:
        """Run the loop to its end; always finishes the run (finished or failed)."""
        try:
            await self._drive()
        finally:
            for toolset in self.toolsets:
                if getattr(toolset, "per_request", False):
                    try:
                        await asyncio.shield(toolset.aclose())
                    except Exception:
                        log.exception("run %s: tool set %r failed to close", self.run.id, toolset.name)

    async def _drive(self) -> None:
        turn = self.turn
        history, listings, requests = self._split(turn.history)
        current = [i for i in turn.input if not isinstance(i, LOOP_ITEM_TYPES)]
        approvals = [i for i in turn.input if isinstance(i, ApprovalResponse)]
        # Approval requests answered in this input, and those of the history, for lookups.
        for item in turn.input:
            if isinstance(item, ApprovalRequest):
                requests[item.id] = item
        await self._list_all(listings)
        clash = find_name_clash([spec.name for spec in turn.tools],
                                {e.toolset.name: [e.info] for e in self.catalog.values()})
        if clash is not None:  # endpoints check this before the run (a 400); this guards the others
            self._fail(RunError(clash.message("client tool"), code="invalid_value", type="invalid_request_error",
                                status=400, param="tools"))
            return
        unknown = [a.approval_request_id for a in approvals if a.approval_request_id not in requests]
        if unknown:
            self._fail(RunError(f"approval_request_id {unknown[0]!r} answers no mcp_approval_request of this "
                                "conversation", code="invalid_value", type="invalid_request_error", status=400,
                                param="approval_request_id"))
            return
        convo: list[Item] = [*history, *current]
        convo.extend(await self._answer_approvals(approvals, requests))
        choice = turn.tool_choice
        while True:
            offer_server = self.iterations < self.run.agent.max_tool_iterations and self.calls_made < self.budget
            outcome = await self._provider_turn(convo, choice, offer_server)
            if outcome is None:
                return  # finished or failed inside
            text, server_calls, client_calls = outcome
            if text:
                convo.append(Message(role="assistant", parts=[TextPart(text)]))
            if not server_calls:
                self._end("tool_calls" if client_calls else "stop")
                return
            self.iterations += 1
            pending_approval = await self._run_calls(server_calls, convo)
            if client_calls or pending_approval:
                self._end("tool_calls" if client_calls else "stop")
                return
            if choice.mode == "required":  # forced once; later turns may answer
                choice = ToolChoice(mode="auto", allowed=choice.allowed)

    # ------------------------------------------------------------------ conversation

    def _split(self, items: list[Item]) -> tuple[list[Item], dict[str, ToolListing], dict[str, ApprovalRequest]]:
        """History without loop items; the newest listing per tool set; approval requests by id.

        A denied request of the history stays visible to the model as a denied call.
        """
        listings: dict[str, ToolListing] = {}
        requests: dict[str, ApprovalRequest] = {}
        denied: set[str] = set()
        for item in items:
            if isinstance(item, ApprovalResponse) and not item.approve:
                denied.add(item.approval_request_id)
        kept: list[Item] = []
        for item in items:
            if isinstance(item, ToolListing):
                if item.error is None:
                    listings[item.server] = item
            elif isinstance(item, ApprovalRequest):
                requests[item.id] = item
                if item.id in denied:
                    name = model_tool_name(item.server, item.name)
                    kept.append(ToolCall(call_id=item.id, name=name, arguments=item.arguments, server=item.server))
                    kept.append(ToolResult(call_id=item.id, output=DENIED_OUTPUT))
            elif not isinstance(item, ApprovalResponse):
                kept.append(item)
        return kept, listings, requests

    async def _list_all(self, cached: dict[str, ToolListing]) -> None:
        """Fill the catalog: every tool set's tools under their model-facing names."""
        for toolset in self.toolsets:
            per_request = getattr(toolset, "per_request", False)
            listing = cached.get(toolset.name) if per_request else None
            if listing is not None:
                tools = [ToolInfo.from_dict(t) for t in listing.tools]
            else:
                listed = self.turn.listed.get(toolset.name)  # the endpoint's pre-check listed it
                try:
                    if isinstance(listed, str):
                        raise _ListingFailed(listed)
                    if listed is None:
                        async with asyncio.timeout(toolset.timeout_seconds or DEFAULT_LIST_TIMEOUT):
                            listed = await toolset.list_tools()
                    tools = list(listed)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    message = str(exc) if isinstance(exc, _ListingFailed) else \
                        describe_error(exc, "listing tools", toolset.timeout_seconds or DEFAULT_LIST_TIMEOUT)
                    log.warning("run %s: could not list tool set %r: %s", self.run.id, toolset.name, safe(message))
                    if per_request:
                        self.run._emit(ToolsListed(server=toolset.name, tools=[], error=message))
                    continue
                if per_request:
                    self.run._emit(ToolsListed(server=toolset.name, tools=[t.to_dict() for t in tools]))
            for info in tools:
                name = model_tool_name(toolset.name, info.name)
                if name not in self.catalog:
                    self.catalog[name] = _Entry(toolset, info)

    def _server_specs(self) -> list[ToolSpec]:
        return [ToolSpec(name=name, parameters=entry.info.parameters, description=entry.info.description)
                for name, entry in self.catalog.items()]

    # ------------------------------------------------------------------ one provider turn

    async def _provider_turn(self, convo: list[Item], choice: ToolChoice,
                             offer_server: bool) -> tuple[str, list[_Call], bool] | None:
        """Stream one provider turn. Returns (its text, server calls, whether client calls were
        kept), or None when the run ended in it (limit, failure)."""
        turn = self.turn
        # Calls to server tools are recognised even on a turn that does not offer them (the
        # limits are spent): such calls are dropped, never handed to the client as its own.
        server_names = set(self.catalog)
        offered_names = server_names if offer_server else set()
        tools = [*turn.tools, *(self._server_specs() if offer_server else [])]
        if choice.allowed is not None and offered_names:
            choice = replace(choice, allowed=[*choice.allowed, *offered_names])
        if choice.function is None and choice.mode == "required" and not tools:
            choice = ToolChoice(mode="auto")
        pturn = replace(turn, history=[], input=list(convo), tools=tools, tool_choice=choice, toolsets=[])
        policy = ToolPolicy(turn)
        run = self.run
        emit = run._emit
        server: dict[int, _Call] = {}
        text: list[str] = []
        stream = self.provider.stream(pturn)
        try:
            async for ev in stream:
                kind = type(ev)
                if kind is TextDelta:
                    text.append(ev.text)  # type: ignore[union-attr]
                    emit(ev)
                elif kind is ReasoningDelta:
                    emit(ev)
                elif kind is Usage:
                    self._add_usage(ev)  # type: ignore[arg-type]
                elif isinstance(ev, ToolCallStart | ToolCallDelta | ToolCallDone):
                    index = ev.index
                    name = getattr(ev, "name", None)
                    if index in server or (name is not None and name in server_names):
                        if isinstance(ev, ToolCallStart):
                            server[index] = _Call(ev.call_id, ev.name, "")
                        elif isinstance(ev, ToolCallDelta) and index in server:
                            server[index].arguments += ev.arguments
                        elif isinstance(ev, ToolCallDone):
                            server[index] = _Call(ev.call_id, ev.name, ev.arguments)
                        continue
                    kept = policy.apply(ev)
                    if kept is not None:
                        emit(kept)
                elif isinstance(ev, Failed):
                    self._fail(ev.error)
                    return None
                elif isinstance(ev, Finished):
                    if ev.reason in ("length", "content_filter"):
                        self._end(ev.reason)
                        return None
                    break
        except ProviderError as exc:
            self._fail(exc.error)
            return None
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as exc:
            log.exception("run %s: provider %r raised", run.id, run.agent.provider)
            self._fail(RunError(f"provider {run.agent.provider!r} failed: {type(exc).__name__}: {exc}"))
            return None
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("run %s: provider %r failed to close its stream", run.id, run.agent.provider)
        calls = [server[i] for i in sorted(server)]
        if calls and not offer_server:
            log.info("run %s: dropped %d call(s) to server tools the model was no longer offered (%s): the tool "
                     "limit of this run is spent", run.id, len(calls), safe(", ".join(c.model_name for c in calls)))
            calls = []
        return "".join(text), calls, policy.kept > 0

    # ------------------------------------------------------------------ running calls

    async def _run_calls(self, calls: list[_Call], convo: list[Item]) -> bool:
        """Run (or hold for approval) one turn's server calls; append calls and results to ``convo``.

        Returns True when some call waits for the client's approval.
        """
        runnable: list[tuple[_Call, _Entry]] = []
        waiting = False
        for call in calls:
            entry = self.catalog[call.model_name]
            needs_approval = getattr(entry.toolset, "needs_approval", None)
            if needs_approval is not None and needs_approval(entry.info.name):
                approval_id = "apr_" + os.urandom(16).hex()
                self.run._emit(ApprovalRequested(approval_id=approval_id, server=entry.toolset.name,
                                                 name=entry.info.name, arguments=call.arguments))
                waiting = True
                continue
            if self.calls_made >= self.budget:
                # Over the limit: the model is told so instead of the call running.
                convo.append(ToolCall(call_id=call.call_id, name=call.model_name, arguments=call.arguments,
                                      server=entry.toolset.name))
                convo.append(ToolResult(call_id=call.call_id, output=f"Error: not run: the limit of {self.budget} "
                                        "server-side tool calls for this response was reached"))
                continue
            self.calls_made += 1
            runnable.append((call, entry))
        if runnable:
            convo.extend(await self._execute(runnable))
        return waiting

    async def _answer_approvals(self, approvals: list[ApprovalResponse],
                                requests: dict[str, ApprovalRequest]) -> list[Item]:
        """Run the approved calls of this input; denied ones become a denied result for the model."""
        runnable: list[tuple[_Call, _Entry]] = []
        out: list[Item] = []
        for answer in approvals:
            request = requests[answer.approval_request_id]  # unknown ids failed the run in _drive
            name = model_tool_name(request.server, request.name)
            entry = self.catalog.get(name)
            call = _Call(request.id, name, request.arguments)
            if not answer.approve or entry is None:
                why = DENIED_OUTPUT if not answer.approve else f"Error: tool {request.name!r} of {request.server!r} " \
                    "is not available in this request"
                if answer.approve:
                    self.run._emit(ServerCallDone(call_id=request.id, server=request.server, name=request.name,
                                                  arguments=request.arguments, error=why))
                out.append(ToolCall(call_id=request.id, name=name, arguments=request.arguments,
                                    server=request.server))
                out.append(ToolResult(call_id=request.id, output=why))
                continue
            self.calls_made += 1
            runnable.append((call, entry))
        if runnable:
            out.extend(await self._execute(runnable))
        return out

    async def _execute(self, calls: list[tuple[_Call, _Entry]]) -> list[Item]:
        """Run calls concurrently (bounded); every call ends in a result, never in an exception."""
        for call, entry in calls:  # announced in the model's order, before any ends
            self.run._emit(ServerCallStart(call_id=call.call_id, server=entry.toolset.name, name=entry.info.name,
                                           arguments=call.arguments))
        gate = asyncio.Semaphore(self.parallel)
        results: list[ToolOutput | None] = [None] * len(calls)

        async def one(index: int, call: _Call, entry: _Entry) -> None:
            async with gate:
                results[index] = await self._call_one(call, entry)

        async with asyncio.TaskGroup() as group:
            for index, (call, entry) in enumerate(calls):
                group.create_task(one(index, call, entry))
        items: list[Item] = []
        for (call, entry), result in zip(calls, results, strict=True):
            assert result is not None
            items.append(ToolCall(call_id=call.call_id, name=call.model_name, arguments=call.arguments,
                                  server=entry.toolset.name))
            items.append(ToolResult(call_id=call.call_id,
                                    output=f"Error: {result.text}" if result.is_error else result.text))
        return items

    async def _call_one(self, call: _Call, entry: _Entry) -> ToolOutput:
        observers = self.observers
        if observers is None:
            return await self._run_tool(call, entry)
        tokens = observers.tool_call_started(self.run, entry.toolset, entry.info.name, call.call_id, call.arguments)
        result = ToolOutput("the call was cancelled", is_error=True)
        try:
            result = await self._run_tool(call, entry)
            return result
        finally:
            observers.tool_call_finished(self.run, tokens, result)

    async def _run_tool(self, call: _Call, entry: _Entry) -> ToolOutput:
        toolset, info = entry.toolset, entry.info
        context = ToolContext(run_id=self.run.id, agent=self.run.agent.name, principal=self.run.principal,
                              call_id=call.call_id)
        started = time.monotonic()
        timeout = toolset.timeout_seconds
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
            if not isinstance(arguments, dict):
                raise ValueError("the arguments must be a JSON object")
        except ValueError as exc:
            result = ToolOutput(f"invalid arguments for {info.name!r}: {exc}", is_error=True)
        else:
            try:
                async with asyncio.timeout(timeout):
                    result = await toolset.call(info.name, arguments, context)
                result = ToolOutput(truncate_output(result.text), result.is_error)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                result = ToolOutput(describe_error(exc, f"tool {info.name!r}", timeout), is_error=True)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_CALL_SECONDS:
            log.info("run %s: tool %s of %s took %.1fs", self.run.id, safe(info.name), safe(toolset.name), elapsed)
        self.run._emit(ServerCallDone(call_id=call.call_id, server=toolset.name, name=info.name,
                                      arguments=call.arguments, output=None if result.is_error else result.text,
                                      error=result.text if result.is_error else None))
        return result

    # ------------------------------------------------------------------ ending

    def _add_usage(self, usage: Usage) -> None:
        self.saw_usage = True
        total = self.usage
        total.input_tokens += usage.input_tokens
        total.output_tokens += usage.output_tokens
        total.reasoning_tokens += usage.reasoning_tokens
        total.cached_tokens += usage.cached_tokens
        total.cache_write_tokens += usage.cache_write_tokens

    def _end(self, reason: str) -> None:
        if self.saw_usage:
            self.run._emit(self.usage)
        self.run._finish(reason)

    def _fail(self, error: RunError) -> None:
        if self.saw_usage:
            self.run._emit(self.usage)
        self.run._fail(error)
