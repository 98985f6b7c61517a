"""One turn on the local model, run in the worker thread: text, JSON, or a forced tool call.

The runner decides what to generate and turns generated text into run events:

* a forced tool call (``turn.forced_tools()`` non-empty): when several tools qualify,
  a first, tiny generation picks the name under a grammar that admits only their
  names; then the arguments are generated under a grammar built from that tool's
  JSON schema, streamed as ``ToolCallDelta`` pieces. One call per turn.
* ``response_format`` json_schema / json_object: text under the schema's grammar.
* otherwise free text; tools offered with ``auto`` are not shown to the model: a 135M
  model cannot decide reliably when to call one, and a half-followed tool protocol
  would leak into answers. Clients that need a call force it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from kernel import (
    Finished,
    ProviderError,
    RunError,
    RunEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolSpec,
    Turn,
    Usage,
)
from plugins.local_model.engine import ContextOverflow, Engine, Generation, InvalidGrammar, Sampling
from plugins.local_model.grammar import (
    ANY_OBJECT_SCHEMA,
    choice_grammar,
    custom_tool_grammar,
    object_grammar,
    schema_grammar,
)
from plugins.local_model.options import LocalModelOptions
from plugins.local_model.prompt import (
    VERBOSITY_HINTS,
    choose_tool_instructions,
    custom_tool_instructions,
    json_format_instructions,
    prompt_parts,
    tool_arguments_instructions,
)

log = logging.getLogger("plugins.local_model")

Emit = Callable[[RunEvent], None]


@dataclass(slots=True)
class TurnStats:
    """What the last turn cost; the provider keeps it for tests and benchmarks."""

    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    generations: int = 0
    first_token_seconds: float | None = None


class TurnRunner:
    """Runs one turn against a loaded :class:`Engine` (blocking; worker thread only)."""

    def __init__(self, engine: Engine, options: LocalModelOptions, provider: str, turn: Turn, emit: Emit,
                 cancelled: threading.Event) -> None:
        self.engine = engine
        self.options = options
        self.provider = provider
        self.turn = turn
        self.emit = emit
        self.cancelled = cancelled
        self.stats = TurnStats()
        limits = turn.limits
        self.max_tokens = limits.max_output_tokens or options.default_max_output_tokens
        self.temperature = options.default_temperature if limits.temperature is None else limits.temperature
        self.top_p = options.default_top_p if limits.top_p is None else limits.top_p
        # Penalties default to off; reasoning_effort is ignored: these models have no such knob.
        self.presence_penalty = limits.presence_penalty or 0.0
        self.frequency_penalty = limits.frequency_penalty or 0.0

    def run(self) -> TurnStats:
        """Generate the turn's answer, emitting events; ends with Usage and Finished
        (nothing more is emitted once cancelled)."""
        try:
            forced = self.turn.forced_tools()
            reason = self._tool_call(forced) if forced else self._text()
        except ContextOverflow as exc:
            raise ProviderError(RunError(
                f"{exc}; send a shorter input or raise n_ctx in [providers.{self.provider}]",
                code="context_length_exceeded", type="invalid_request_error", status=400, param="input",
            )) from None
        self.stats.finish_reason = reason
        if reason != "cancelled":
            self.emit(Usage(input_tokens=self.stats.input_tokens, output_tokens=self.stats.output_tokens))
            self.emit(Finished(reason=reason))  # type: ignore[arg-type]
        return self.stats

    # ------------------------------------------------------------------ answers

    def _text(self) -> str:
        fmt = self.turn.response_format or {}
        grammar: str | None = None
        extra = ""
        if fmt.get("type") == "json_schema":
            schema = fmt.get("schema") if isinstance(fmt.get("schema"), dict) else None
            grammar = self._grammar(object_grammar(schema, f"response format {fmt.get('name')!r}"))
            extra = json_format_instructions(schema)
        elif fmt.get("type") == "json_object":
            grammar = self._grammar(schema_grammar(ANY_OBJECT_SCHEMA))
            extra = json_format_instructions(None)
        # Stop strings would cut JSON short, so they apply to free text only.
        stops = list(self.turn.limits.stop) if grammar is None else []
        gen = self._generate(extra, self.max_tokens, grammar, stops, lambda t: self.emit(TextDelta(t)))
        return gen.finish_reason

    def _tool_call(self, forced: list[ToolSpec]) -> str:
        tool = forced[0] if len(forced) == 1 else self._pick_tool(forced)
        if tool is None:
            return "cancelled"
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        kind = tool.tool_kind
        self.emit(ToolCallStart(index=0, call_id=call_id, name=tool.name, tool_kind=kind))
        if kind == "custom":
            # Freeform input: under the tool's lark/regex grammar translated to GBNF where it
            # can be (grammar.custom_tool_grammar), else free text; the grammar is also stated.
            grammar, instructions = self._custom_grammar(tool), custom_tool_instructions(tool)
        else:
            grammar = self._grammar(object_grammar(tool.parameters, f"tool {tool.name!r}"))
            instructions = tool_arguments_instructions(tool)
        gen = self._generate(instructions, self.max_tokens, grammar, [],
                             lambda t: self.emit(ToolCallDelta(index=0, arguments=t)))
        if gen.finish_reason == "stop":
            # The grammar admits end-of-turn only after a complete value: the JSON parses.
            self.emit(ToolCallDone(index=0, call_id=call_id, name=tool.name, arguments=gen.text, tool_kind=kind))
            return "tool_calls"
        return gen.finish_reason  # "length": arguments cut short, like any upstream would

    def _pick_tool(self, tools: list[ToolSpec]) -> ToolSpec | None:
        """Let the model name one of ``tools`` (greedy, grammar-limited to their names)."""
        names = [t.name for t in tools]
        budget = max(len(n) for n in names) + 8  # a name never needs more tokens than characters
        # Greedy and unpenalised: the client's penalties are about the answer, not this choice.
        gen = self._generate(choose_tool_instructions(tools), budget, choice_grammar(names), [], lambda _: None,
                             temperature=0.0, penalize=False)
        if gen.finish_reason == "cancelled":
            return None
        try:
            name = json.loads(gen.text)
        except ValueError:
            name = None  # cut short: cannot happen with the budget above, but never fail a turn on it
        return next((t for t in tools if t.name == name), tools[0])

    # ------------------------------------------------------------------ plumbing

    def _generate(self, extra_system: str, max_tokens: int, grammar: str | None, stops: list[str],
                  on_text: Callable[[str], None], *, temperature: float | None = None,
                  penalize: bool = True) -> Generation:
        verbosity = self.turn.limits.verbosity
        if verbosity is not None:
            extra_system = "\n\n".join(t for t in (VERBOSITY_HINTS.get(verbosity, ""), extra_system) if t)
        parts = prompt_parts(self.turn, extra_system)
        tokens = self.engine.fit(parts, reserve=min(max_tokens, self.engine.config.n_ctx // 4))
        sampling = Sampling(
            max_tokens=max_tokens, temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p, stop=stops, grammar=grammar, seed=self.options.seed,
            repeat_penalty=self.options.repeat_penalty,
            presence_penalty=self.presence_penalty if penalize else 0.0,
            frequency_penalty=self.frequency_penalty if penalize else 0.0,
        )
        gen = self.engine.generate(tokens, sampling, on_text, self.cancelled)
        self.stats.generations += 1
        self.stats.input_tokens += gen.prompt_tokens
        self.stats.output_tokens += gen.completion_tokens
        if self.stats.first_token_seconds is None:
            self.stats.first_token_seconds = gen.first_token_seconds
        return gen

    def _custom_grammar(self, tool: ToolSpec) -> str | None:
        """The custom tool's grammar as GBNF if llama.cpp accepts it, else None (free text)."""
        gbnf = custom_tool_grammar(tool.format, f"custom tool {tool.name!r}")
        if gbnf is None:
            return None
        try:
            self.engine.check_grammar(gbnf)
            return gbnf
        except InvalidGrammar:
            log.warning("custom tool %r: llama.cpp rejected the GBNF translation of its grammar (e.g. left "
                        "recursion through another rule); the input is free text", tool.name)
            return None

    def _grammar(self, gbnf: str) -> str:
        """``gbnf`` if llama.cpp accepts it, else any JSON object (still parseable)."""
        try:
            self.engine.check_grammar(gbnf)
            return gbnf
        except InvalidGrammar:
            log.warning("llama.cpp rejected a grammar built from a schema; using any JSON object instead")
            return schema_grammar(ANY_OBJECT_SCHEMA)
