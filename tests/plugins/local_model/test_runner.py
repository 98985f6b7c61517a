"""What the turn runner asks the engine for (no model needed): the request's limits and
the provider's defaults reach the sampler, grammars and stop strings go where they
belong, and generated text becomes the right run events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kernel import (
    Finished,
    Limits,
    Message,
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
)
from plugins.local_model.engine import Generation, Sampling
from plugins.local_model.options import LocalModelOptions
from plugins.local_model.prompt import PromptParts
from plugins.local_model.runner import TurnRunner

WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@dataclass
class Config:
    n_ctx: int = 2048


@dataclass
class ScriptedEngine:
    """Stands in for :class:`Engine`: records each generation's prompt and sampling and
    "generates" the next scripted text in two pieces."""

    replies: list[str]
    config: Config = field(default_factory=Config)
    sampled: list[Sampling] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    def fit(self, parts: PromptParts, reserve: int) -> list[int]:
        self.prompts.append(json.dumps(parts.messages()))
        return [1, 2, 3]

    def check_grammar(self, grammar: str) -> None:
        assert "root ::=" in grammar

    def generate(self, tokens: list[int], sampling: Sampling, on_text: Callable[[str], None],
                 cancelled: threading.Event) -> Generation:
        self.sampled.append(sampling)
        text = self.replies.pop(0)
        half = len(text) // 2
        for piece in (text[:half], text[half:]):
            if piece:
                on_text(piece)
        return Generation(text=text, prompt_tokens=len(tokens), completion_tokens=4, finish_reason="stop")


def run(turn: Turn, replies: list[str], **options: Any) -> tuple[ScriptedEngine, list[RunEvent]]:
    engine = ScriptedEngine(list(replies))
    events: list[RunEvent] = []
    runner = TurnRunner(engine, LocalModelOptions(**options), "local", turn,  # type: ignore[arg-type]
                        events.append, threading.Event())
    runner.run()
    return engine, events


def ask(text: str = "hi", **fields: Any) -> Turn:
    return Turn(agent="main", input=[Message("user", [TextPart(text)])], **fields)


def test_request_limits_reach_the_sampler() -> None:
    turn = ask(limits=Limits(max_output_tokens=33, temperature=1.3, top_p=0.42, stop=["END"]))
    engine, events = run(turn, ["Hello there"], seed=11, repeat_penalty=1.25)
    (sampling,) = engine.sampled
    assert (sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.stop) == (33, 1.3, 0.42, ["END"])
    assert (sampling.seed, sampling.repeat_penalty, sampling.grammar) == (11, 1.25, None)
    assert events == [TextDelta("Hello"), TextDelta(" there"), Usage(input_tokens=3, output_tokens=4),
                      Finished("stop")]


def test_unset_limits_take_the_provider_defaults_and_zero_is_not_unset() -> None:
    engine, _ = run(ask(), ["a"], default_max_output_tokens=77, default_temperature=0.6, default_top_p=0.8)
    assert (engine.sampled[0].max_tokens, engine.sampled[0].temperature, engine.sampled[0].top_p) == (77, 0.6, 0.8)
    engine, _ = run(ask(limits=Limits(temperature=0.0)), ["a"], default_temperature=0.6)
    assert engine.sampled[0].temperature == 0.0  # greedy on request, not the default


def test_request_penalties_reach_the_sampler_and_effort_changes_nothing() -> None:
    turn = ask(limits=Limits(presence_penalty=1.5, frequency_penalty=-0.5, reasoning_effort="high"))
    engine, events = run(turn, ["Hi"])
    (sampling,) = engine.sampled
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.5, -0.5)
    assert [type(e) for e in events] == [TextDelta, TextDelta, Usage, Finished]
    engine, _ = run(ask(), ["Hi"])  # unset: off, as llama.cpp's own default
    assert (engine.sampled[0].presence_penalty, engine.sampled[0].frequency_penalty) == (0.0, 0.0)


def test_penalties_apply_to_tool_arguments_but_not_to_picking_the_tool() -> None:
    email = ToolSpec(name="send_email", parameters={"type": "object", "properties": {"to": {"type": "string"}}})
    turn = ask("mail bob", tools=[WEATHER, email], tool_choice=ToolChoice(mode="required"),
               limits=Limits(presence_penalty=2.0, frequency_penalty=1.0))
    engine, _ = run(turn, ['"send_email"', '{"to": "bob"}'])
    pick, arguments = engine.sampled
    assert (pick.presence_penalty, pick.frequency_penalty) == (0.0, 0.0)
    assert (arguments.presence_penalty, arguments.frequency_penalty) == (2.0, 1.0)


def test_json_schema_format_generates_under_a_grammar_without_stop_strings() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    turn = ask(limits=Limits(stop=["}"]), response_format={"type": "json_schema", "name": "x", "schema": schema})
    engine, events = run(turn, ['{"n": 1}'])
    (sampling,) = engine.sampled
    assert sampling.grammar is not None and '\\"n\\"' in sampling.grammar
    assert sampling.stop == []  # a stop string must not cut the JSON short
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == '{"n": 1}'
    assert '\\"n\\":{\\"type\\":\\"integer\\"}' in engine.prompts[0]  # the model is shown the schema


def test_a_forced_named_tool_streams_start_argument_pieces_and_done() -> None:
    turn = ask("weather in Oslo?", tools=[WEATHER], tool_choice=ToolChoice(mode="required", function="get_weather"))
    engine, events = run(turn, ['{"city": "Oslo"}'])
    (sampling,) = engine.sampled  # one tool qualifies: no picking step
    assert sampling.grammar is not None and '\\"city\\"' in sampling.grammar
    start, first, second, done, usage, finished = events
    assert isinstance(start, ToolCallStart) and start.name == "get_weather" and start.call_id.startswith("call_")
    assert isinstance(first, ToolCallDelta) and isinstance(second, ToolCallDelta)
    assert first.arguments + second.arguments == '{"city": "Oslo"}'
    assert done == ToolCallDone(index=0, call_id=start.call_id, name="get_weather", arguments='{"city": "Oslo"}')
    assert isinstance(usage, Usage) and finished == Finished("tool_calls")


def test_required_with_several_tools_first_picks_a_name_greedily() -> None:
    email = ToolSpec(name="send_email", parameters={"type": "object", "properties": {"to": {"type": "string"}}})
    turn = ask("mail bob", tools=[WEATHER, email], tool_choice=ToolChoice(mode="required"),
               limits=Limits(temperature=1.0))
    engine, events = run(turn, ['"send_email"', '{"to": "bob"}'])
    pick, arguments = engine.sampled
    assert pick.temperature == 0.0 and pick.grammar is not None and '\\"send_email\\"' in pick.grammar
    assert arguments.temperature == 1.0 and '\\"to\\"' in (arguments.grammar or "")
    done = next(e for e in events if isinstance(e, ToolCallDone))
    assert (done.name, done.arguments) == ("send_email", '{"to": "bob"}')


def test_auto_tool_choice_answers_in_text_without_showing_the_tools() -> None:
    engine, events = run(ask("Say hello.", tools=[WEATHER]), ["Hello!"])
    assert engine.sampled[0].grammar is None
    assert "get_weather" not in engine.prompts[0]
    assert [type(e) for e in events] == [TextDelta, TextDelta, Usage, Finished]


def custom_tool(definition: str, syntax: str = "lark") -> ToolSpec:
    return ToolSpec(name="apply_patch", tool_kind="custom", description="Edit files",
                    format={"type": "grammar", "syntax": syntax, "definition": definition})


def test_custom_tool_input_is_generated_under_its_grammar_which_is_also_stated() -> None:
    turn = ask("edit", tools=[custom_tool('start: "*** Begin Patch"')],
               tool_choice=ToolChoice(mode="required", function="apply_patch"))
    engine, events = run(turn, ["*** Begin Patch"])
    (sampling,) = engine.sampled
    assert sampling.grammar == 'root ::= r-start\nr-start ::= t---ANON-0\nt---ANON-0 ::= "*** Begin Patch"\n'
    assert "lark grammar" in engine.prompts[0] and "Begin Patch" in engine.prompts[0]
    start = next(e for e in events if isinstance(e, ToolCallStart))
    done = next(e for e in events if isinstance(e, ToolCallDone))
    assert start.tool_kind == done.tool_kind == "custom"
    assert done.arguments == "*** Begin Patch"


def test_custom_tool_grammar_outside_the_subset_is_free_text_with_a_note(caplog) -> None:
    # A lookahead has no GBNF form: the input is free text and the log says why.
    turn = ask("edit", tools=[custom_tool(r"(?=a)\w+", "regex")],
               tool_choice=ToolChoice(mode="required", function="apply_patch"))
    engine, events = run(turn, ["abc"])
    assert engine.sampled[0].grammar is None
    assert "custom tool 'apply_patch': its regex grammar cannot be enforced by llama.cpp (assert)" in caplog.text
    assert next(e for e in events if isinstance(e, ToolCallDone)).arguments == "abc"


def test_verbosity_is_stated_in_the_system_text() -> None:
    engine, _ = run(ask(limits=Limits(verbosity="low")), ["Hi"])
    assert "Answer briefly." in engine.prompts[0]
