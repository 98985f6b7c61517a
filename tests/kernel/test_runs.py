"""The run registry: ids and statuses, shared event streams, cancel, timeout, failures, tool policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict

from kernel import (
    ApiError,
    Finished,
    Message,
    ProviderError,
    ProviderKind,
    RunError,
    RunEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
    Turn,
    Usage,
    hookimpl,
)
from kernel.runs import _Assembler
from kernel.types import Reasoning, ReasoningDelta


class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str = "words"  # which behaviour stream() plays
    words: int = 3
    delay: float = 0.0


@dataclass
class Probe:
    """A provider whose behaviour each test picks, and which records what happened to it."""

    name: str
    options: ProbeOptions
    accepts_images: bool = False
    started: int = 0
    cancelled: int = 0
    closed_streams: int = 0
    turns: list[Turn] = field(default_factory=list)
    refuse: bool = False

    def admit(self) -> None:
        if self.refuse:
            raise ProviderError(RunError("busy", code="saturated", type="rate_limit_error", status=429,
                                         retry_after=7))

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        self.started += 1
        self.turns.append(turn)
        script = self.options.script
        try:
            if script == "words":
                for i in range(self.options.words):
                    await asyncio.sleep(self.options.delay)
                    yield TextDelta(f"w{i} ")
                yield Usage(input_tokens=1, output_tokens=self.options.words)
                yield Finished(reason="stop")
            elif script == "return_early":
                yield TextDelta("no finish event")
            elif script == "raise":
                yield TextDelta("partial ")
                raise ValueError("kaput")
            elif script == "provider_error":
                raise ProviderError(RunError("upstream said no", code="upstream_error", status=502))
            elif script == "tools":
                # Calls to a, b, c with unusual indices; the kernel's policy filters and re-numbers.
                for index, name in ((5, "a"), (7, "b"), (9, "c")):
                    yield ToolCallStart(index=index, call_id=f"id_{name}", name=name)
                    yield ToolCallDelta(index=index, arguments='{"n":')
                    yield ToolCallDelta(index=index, arguments=f'"{name}"}}')
                    yield ToolCallDone(index=index, call_id=f"id_{name}", name=name, arguments=f'{{"n":"{name}"}}')
                yield Finished(reason="tool_calls")
            elif script == "events_after_finish":
                yield TextDelta("done")
                yield Finished(reason="stop")
                yield TextDelta("never seen")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.closed_streams += 1

    async def aclose(self) -> None:
        return None


class ProbePlugin:
    @hookimpl
    def register_providers(self):
        return [ProviderKind(kind="probe", factory=lambda name, options, kernel: Probe(name, options),
                             settings_model=ProbeOptions)]


PROBES = {
    "kernel": {"shutdown_grace_seconds": 0.2},
    "providers": {
        "words": {"kind": "probe"},
        "slow": {"kind": "probe", "words": 1000, "delay": 0.02},
        "early": {"kind": "probe", "script": "return_early"},
        "raise": {"kind": "probe", "script": "raise"},
        "perr": {"kind": "probe", "script": "provider_error"},
        "tools": {"kind": "probe", "script": "tools"},
        "after": {"kind": "probe", "script": "events_after_finish"},
    },
    "agents": {name: {"provider": name} for name in ("words", "slow", "early", "raise", "perr", "tools", "after")},
}


@pytest.fixture
async def kernel(make_app, running):
    async with running(make_app(PROBES, extra_plugins={"probe": ProbePlugin()})) as (kernel, _):
        yield kernel


def turn(agent: str, text: str = "hi", **kwargs) -> Turn:
    return Turn(agent=agent, input=[Message("user", [TextPart(text)])], **kwargs)


async def collect(run, after: int = 0) -> list[RunEvent]:
    return [ev async for ev in run.events(after=after)]


async def test_a_run_has_an_id_status_and_result(kernel):
    run = kernel.runs.start(turn("words"), principal="ci")
    assert run.id.startswith("run_") and kernel.runs.get(run.id) is run
    assert run.status in ("queued", "in_progress")
    assert run.principal == "ci"
    result = await run.wait()
    assert (result.status, result.finish_reason, result.text, result.error) == ("completed", "stop", "w0 w1 w2 ", None)
    assert result.usage == Usage(input_tokens=1, output_tokens=3)
    assert run.done and run.status == "completed"
    assert [ev.kind for ev in run.events_log] == ["text_delta"] * 3 + ["usage", "finished"]


async def test_several_listeners_see_identical_event_streams(kernel):
    kernel.providers["slow"].options.words = 8
    run = kernel.runs.start(turn("slow"))
    live = await asyncio.gather(collect(run), collect(run), collect(run))
    late = await collect(run)  # after the end: a full replay
    assert live[0] == live[1] == live[2] == late == run.events_log
    assert [ev.kind for ev in late].count("finished") == 1 and late[-1] == Finished(reason="stop")
    assert await collect(run, after=5) == run.events_log[5:]


async def test_a_listener_joining_mid_run_gets_the_past_then_the_future(kernel):
    kernel.providers["slow"].options.words = 6
    run = kernel.runs.start(turn("slow"))
    first = []
    async for ev in run.events():
        first.append(ev)
        if len(first) == 2:
            break
    joined = await collect(run)
    assert joined == run.events_log and joined[:2] == first


async def test_event_batches_carry_the_same_events_as_events(kernel):
    kernel.providers["slow"].options.words = 6
    run = kernel.runs.start(turn("slow"))
    batches = [batch async for batch in run.event_batches()]
    assert all(batches) and [ev for batch in batches for ev in batch] == run.events_log
    assert len(batches) > 1  # a slow provider's words arrive over several wake-ups
    # A finished run replays in one batch, from any position, ending at the terminal event.
    assert [batch async for batch in run.event_batches(after=2)] == [run.events_log[2:]]


async def test_cancel_stops_the_provider(kernel):
    probe = kernel.providers["slow"]
    run = kernel.runs.start(turn("slow"))
    async for ev in run.events():
        if isinstance(ev, TextDelta):
            break
    assert run.cancel() is True
    result = await asyncio.wait_for(run.wait(), 5)
    assert (result.status, result.finish_reason) == ("cancelled", "cancelled")
    assert run.events_log[-1] == Finished(reason="cancelled")
    assert probe.cancelled == 1 and probe.closed_streams == 1
    produced = len(run.events_log)
    await asyncio.sleep(0.1)
    assert len(run.events_log) == produced  # nothing after the terminal event
    assert run.cancel() is False


async def test_cancel_before_the_run_starts(kernel):
    run = kernel.runs.start(turn("slow"))
    run.cancel()
    result = await run.wait()
    assert result.status == "cancelled"
    assert [ev.kind for ev in run.events_log] == ["finished"]


async def test_timeout_fails_the_run_with_504_and_stops_the_provider(kernel):
    probe = kernel.providers["slow"]
    run = kernel.runs.start(turn("slow"), timeout=0.1)
    result = await asyncio.wait_for(run.wait(), 5)
    assert result.status == "failed"
    assert (result.error.status, result.error.code) == (504, "timeout")
    assert "timed out after 0.1 seconds" in result.error.message
    assert probe.cancelled == 1
    assert run.events_log[-1].kind == "failed"


async def test_a_provider_exception_becomes_failed_with_its_message(kernel):
    result = await kernel.runs.start(turn("raise")).wait()
    assert result.status == "failed"
    assert result.error.status == 500
    assert result.error.message == "provider 'raise' failed: ValueError: kaput"
    assert result.text == "partial "  # what streamed before the failure stays visible


async def test_a_provider_error_passes_its_run_error_through(kernel):
    run = kernel.runs.start(turn("perr"))
    result = await run.wait()
    assert result.status == "failed" and run.status == "failed"
    assert (result.error.message, result.error.code, result.error.status) == ("upstream said no", "upstream_error", 502)
    assert [ev.kind for ev in run.events_log] == ["failed"]


async def test_a_provider_that_just_returns_is_finished_for_it(kernel):
    run = kernel.runs.start(turn("early"))
    result = await run.wait()
    assert (result.status, result.finish_reason, result.text) == ("completed", "stop", "no finish event")
    assert run.events_log[-1] == Finished(reason="stop")


async def test_events_after_the_terminal_event_are_ignored(kernel):
    probe = kernel.providers["after"]
    run = kernel.runs.start(turn("after"))
    result = await run.wait()
    assert result.text == "done"
    assert [ev.kind for ev in run.events_log] == ["text_delta", "finished"]
    assert probe.closed_streams == 1  # the generator was closed, not left dangling


async def test_a_saturated_provider_is_refused_with_429_and_retry_after(kernel):
    kernel.providers["words"].refuse = True
    with pytest.raises(ApiError) as info:
        kernel.runs.start(turn("words"))
    assert info.value.status == 429
    assert info.value.headers == {"Retry-After": "7"}
    assert info.value.code == "saturated"
    assert kernel.runs.active() == []


async def test_an_unknown_agent_cannot_start(kernel):
    with pytest.raises(ApiError) as info:
        kernel.runs.start(turn("nobody"))
    assert info.value.status == 404


async def test_tool_policy_applies_to_runs(kernel):
    tools = [ToolSpec(name=n) for n in "abc"]
    allowed = await kernel.runs.start(turn("tools", tools=tools, tool_choice=ToolChoice(allowed=["b", "c"]))).wait()
    assert [(c.name, c.arguments) for c in allowed.tool_calls] == [("b", '{"n":"b"}'), ("c", '{"n":"c"}')]
    assert allowed.finish_reason == "tool_calls"

    run = kernel.runs.start(turn("tools", tools=tools))
    await run.wait()
    indices = [(ev.kind, ev.index) for ev in run.events_log if hasattr(ev, "index")]
    assert sorted({i for _, i in indices}) == [0, 1, 2]  # re-numbered from 5, 7, 9

    capped = turn("tools", tools=tools)
    capped.limits.max_tool_calls = 1
    result = await kernel.runs.start(capped).wait()
    assert [c.name for c in result.tool_calls] == ["a"]

    none = await kernel.runs.start(turn("tools", tools=tools, tool_choice=ToolChoice(mode="none"))).wait()
    assert none.tool_calls == [] and none.finish_reason == "stop" and none.status == "completed"


async def test_echo_forced_tool_call_through_the_kernel(make_app, running):
    schema = {"type": "object", "properties": {"city": {"type": "string", "minLength": 2},
                                               "days": {"type": "integer", "minimum": 1}},
              "required": ["city", "days"], "additionalProperties": False}
    async with running(make_app()) as (kernel, _):
        t = turn("main", "Paris", tools=[ToolSpec(name="forecast", parameters=schema)],
                 tool_choice=ToolChoice(mode="required"))
        run = kernel.runs.start(t)
        result = await run.wait()
        assert result.finish_reason == "tool_calls" and result.status == "completed"
        (call,) = result.tool_calls
        assert call.name == "forecast"
        jsonschema.validate(json.loads(call.arguments), schema)
        kinds = [ev.kind for ev in run.events_log]
        assert kinds[0] == "tool_call_start" and kinds.count("tool_call_delta") >= 1 and "tool_call_done" in kinds


async def test_drain_lets_short_runs_finish_and_cancels_long_ones(kernel):
    kernel.providers["words"].options.delay = 0.01
    short = kernel.runs.start(turn("words"))
    long = kernel.runs.start(turn("slow"))
    await kernel.runs.drain(0.3)
    assert short.status == "completed"
    assert long.status == "cancelled"
    assert kernel.runs.active() == []


async def test_finished_runs_are_forgotten_after_a_while(kernel, monkeypatch):
    import kernel.runs as runs_module

    old = kernel.runs.start(turn("words"))
    await old.wait()
    monkeypatch.setattr(runs_module, "FINISHED_RUN_TTL_SECONDS", 0.0)
    newer = kernel.runs.start(turn("words"))
    await newer.wait()
    assert kernel.runs.get(old.id) is None


def test_the_assembler_orders_text_reasoning_and_tool_calls_as_they_streamed():
    asm = _Assembler()
    events = [ReasoningDelta("think "), ReasoningDelta("hard"), TextDelta("Hel"), TextDelta("lo"),
              ToolCallStart(index=0, call_id="c1", name="f"), ToolCallDone(index=0, call_id="c1", name="f",
                                                                           arguments="{}"),
              TextDelta("after"), ReasoningDelta("again"), TextDelta(" and "), TextDelta("more")]
    for ev in events[:4]:
        asm.feed(ev)
    assert asm.output[1].text == "Hello"  # readable mid-stream
    for ev in events[4:]:
        asm.feed(ev)
    kinds = [type(i).__name__ for i in asm.output]
    assert kinds == ["Reasoning", "Message", "ToolCall", "Message", "Reasoning", "Message"]
    assert [getattr(i, "text", None) for i in asm.output] == ["think hard", "Hello", None, "after", "again",
                                                               " and more"]
    assert isinstance(asm.output[0], Reasoning)
    many = _Assembler()
    for _ in range(20_000):
        many.feed(TextDelta("ab"))
    assert many.output[0].text == "ab" * 20_000
