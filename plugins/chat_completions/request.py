"""A Chat Completions request body -> a :class:`kernel.types.Turn` plus the streaming options.

Validation is hand-written rather than a pydantic model so every 400 names the exact
OpenAI field path (``messages[3].content[1].image_url``, ``tool_choice.function.name``)
and says what would be right. Fields OpenAI defines that the gateway cannot honour
are accepted and ignored (see :data:`IGNORED_FIELDS`); fields that would change the
answer's shape in a way we cannot produce are refused.

Parsing does no I/O: images and files stay pending until
:meth:`ChatRequest.load_media`, so every structural 400 comes before any fetch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kernel import Limits, ToolChoice, ToolSpec, Turn
from kernel.schema_check import check_json_schema
from plugins.chat_completions.fields import integer, invalid, number, opt, required, want
from plugins.chat_completions.messages import MediaSource, ParsedMessages, parse_messages

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4
MAX_METADATA_PAIRS = 16
MAX_TOOLS = 128  # OpenAI's own limit on functions per request

# OpenAI request fields that are accepted and ignored: sampling knobs our providers do
# not take, output options that only add detail we never produce, and platform
# features (storage, tiers, caching). Anything else unknown is ignored too, as most
# OpenAI-compatible servers do, so vendor extensions (top_k ...) do not break clients.
IGNORED_FIELDS = ("logit_bias", "logprobs", "top_logprobs", "seed", "store", "prediction")
# Passed to the provider as Limits.hints (an OpenAI-compatible upstream forwards them).
HINT_FIELDS = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier")
VERBOSITIES = ("low", "medium", "high")

# OpenAI's ``reasoning_effort`` values (the SDK's ``ReasoningEffort``), forwarded as they are.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

# Fields whose effect we cannot deliver; silently ignoring them would mislead the client.
_REFUSED = {
    "functions": "the deprecated 'functions' parameter is not supported; send 'tools' instead.",
    "function_call": "the deprecated 'function_call' parameter is not supported; send 'tool_choice' instead.",
    "audio": "audio output is not supported; omit 'audio' and ask for text.",
    "web_search_options": "web search is a hosted tool this gateway does not run; omit 'web_search_options'.",
}


@dataclass
class ChatRequest:
    """What the route needs after parsing: the turn and how to answer.

    ``turn.history`` and ``turn.input`` are empty until :meth:`load_media` has run.
    """

    turn: Turn
    stream: bool
    include_usage: bool
    messages: ParsedMessages

    def require_answered_calls(self) -> None:
        """A 400 for a tool message whose call the request never made.

        Only meaningful without a session: with one, the call may be in the transcript.
        OpenAI refuses such a message too, and an upstream model would otherwise fail
        later with a less helpful error.
        """
        if self.messages.unanswered_results:
            param, call_id = self.messages.unanswered_results[0]
            raise invalid(param, f"{call_id!r} answers no tool call of an earlier assistant message; a 'tool' "
                          "message must follow the assistant message whose 'tool_calls' hold that id (or send "
                          "an 'x-session-key' whose transcript holds the call).")

    async def load_media(self, media: MediaSource) -> Turn:
        """Load pending images and files into the turn (400s name the part) and return it."""
        self.turn.history, self.turn.input = await self.messages.load_media(media)
        return self.turn


async def parse_and_load(body: dict[str, Any], *, agent: str, media: MediaSource) -> ChatRequest:
    """:func:`parse_request` then :meth:`ChatRequest.load_media`, for callers with no session step."""
    request = parse_request(body, agent=agent)
    await request.load_media(media)
    return request


def parse_request(body: dict[str, Any], *, agent: str) -> ChatRequest:
    """Validate ``body`` and build the turn for ``agent`` (routing is the caller's job); no I/O."""
    for key, message in _REFUSED.items():
        if body.get(key) is not None:
            raise invalid(key, message, code="unsupported_parameter")
    modalities = opt(body, "modalities", list)
    if modalities is not None and any(m != "text" for m in modalities):
        raise invalid("modalities", "only ['text'] output is supported.", code="unsupported_value")
    n = integer(body, "n")  # a non-integer is a type error; any other integer gets the message below
    if n is not None and n != 1:
        raise invalid("n", f"only one choice is supported (n must be 1), but got {n}.", code="unsupported_value")
    stream = bool(opt(body, "stream", bool))
    include_usage = _stream_options(body, stream)

    messages = parse_messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    turn = Turn(
        agent=agent,
        input=[],
        system=messages.system,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        limits=_limits(body),
        response_format=_response_format(body.get("response_format")),
        metadata=_metadata(body.get("metadata")),
        user=opt(body, "user", str),
        surface="chat",
    )
    return ChatRequest(turn=turn, stream=stream, include_usage=include_usage, messages=messages)


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    options = opt(body, "stream_options", dict)
    if options is None:
        return False
    if not stream:
        # OpenAI refuses this combination too; it usually means the client forgot stream=true.
        raise invalid("stream_options", "'stream_options' is only allowed when 'stream' is true.",
                      code="invalid_value")
    return bool(opt(options, "include_usage", bool, "stream_options.include_usage"))


def _limits(body: dict[str, Any]) -> Limits:
    max_tokens = integer(body, "max_tokens", 1)
    max_completion = integer(body, "max_completion_tokens", 1)
    # Both are upper bounds on the answer; when a client sends both, the tighter one holds.
    bounds = [v for v in (max_tokens, max_completion) if v is not None]
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    else:
        stops = [want(s, str, f"stop[{i}]") for i, s in enumerate(want(stop, list, "stop"))]
        if len(stops) > MAX_STOP_SEQUENCES:
            raise invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, but got {len(stops)}.",
                          code="array_above_max_length")
    parallel = opt(body, "parallel_tool_calls", bool)
    return Limits(
        max_output_tokens=min(bounds) if bounds else None,
        temperature=number(body, "temperature", 0, 2),
        top_p=number(body, "top_p", 0, 1),
        stop=[s for s in stops if s],
        parallel_tool_calls=True if parallel is None else parallel,
        presence_penalty=number(body, "presence_penalty", -2, 2),
        frequency_penalty=number(body, "frequency_penalty", -2, 2),
        reasoning_effort=_reasoning_effort(body),
        verbosity=_verbosity(body),
        hints={name: body[name] for name in HINT_FIELDS if body.get(name) is not None},
    )


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    effort = opt(body, "reasoning_effort", str)
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid("reasoning_effort", f"{effort!r} is not one of {', '.join(map(repr, REASONING_EFFORTS))}.")
    return effort


def _verbosity(body: dict[str, Any]) -> str | None:
    value = opt(body, "verbosity", str)
    if value is not None and value not in VERBOSITIES:
        raise invalid("verbosity", f"{value!r} is not one of 'low', 'medium', 'high'.")
    return value


def _custom_tool(tool: dict[str, Any], path: str) -> ToolSpec:
    """``{type: "custom", custom: {name, description, format}}`` -> a custom ToolSpec."""
    custom = required(tool, "custom", dict, f"{path}.custom")
    name = required(custom, "name", str, f"{path}.custom.name")
    if not NAME_PATTERN.match(name):
        raise invalid(f"{path}.custom.name", f"{name!r} must be 1 to 64 letters, digits, '_' or '-'.")
    fmt = opt(custom, "format", dict, f"{path}.custom.format") or {"type": "text"}
    if fmt.get("type") == "grammar":
        grammar = required(fmt, "grammar", dict, f"{path}.custom.format.grammar")
        syntax = grammar.get("syntax")
        if syntax not in ("lark", "regex"):
            raise invalid(f"{path}.custom.format.grammar.syntax", f"{syntax!r} is not 'lark' or 'regex'.")
        definition = required(grammar, "definition", str, f"{path}.custom.format.grammar.definition")
        fmt = {"type": "grammar", "syntax": syntax, "definition": definition}
    elif fmt.get("type") != "text":
        raise invalid(f"{path}.custom.format.type", f"{fmt.get('type')!r} is not 'text' or 'grammar'.")
    return ToolSpec(name=name, description=opt(custom, "description", str, f"{path}.custom.description"),
                    tool_kind="custom", format=fmt if fmt.get("type") == "grammar" else {"type": "text"})


def _tools(raw: Any) -> list[ToolSpec]:
    if raw is None:
        return []
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    tools = want(raw, list, "tools")
    if len(tools) > MAX_TOOLS:
        raise invalid("tools", f"at most {MAX_TOOLS} tools are allowed, but got {len(tools)}.",
                      code="array_above_max_length")
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        tool = want(tool, dict, path)
        if tool.get("type") == "custom":
            spec = _custom_tool(tool, path)
            if spec.name in seen:
                raise invalid(f"{path}.custom.name", f"duplicate tool name {spec.name!r}; tool names must be unique.")
            seen.add(spec.name)
            specs.append(spec)
            continue
        if tool.get("type") != "function":
            raise invalid(f"{path}.type", f"{tool.get('type')!r} tools are not supported; expected 'function' or "
                          "'custom'.", code="unsupported_value")
        function = required(tool, "function", dict, f"{path}.function")
        name = required(function, "name", str, f"{path}.function.name")
        if not NAME_PATTERN.match(name):
            raise invalid(f"{path}.function.name", f"{name!r} must be 1 to 64 letters, digits, '_' or '-'.",
                          code="invalid_value")
        if name in seen:
            raise invalid(f"{path}.function.name", f"duplicate function name {name!r}; tool names must be unique.",
                          code="invalid_value")
        seen.add(name)
        parameters = opt(function, "parameters", dict, f"{path}.function.parameters")
        if parameters is not None:
            check_json_schema(parameters, f"{path}.function.parameters")
        specs.append(ToolSpec(
            name=name,
            parameters=parameters if parameters is not None else {"type": "object", "properties": {}},
            description=opt(function, "description", str, f"{path}.function.description"),
            strict=opt(function, "strict", bool, f"{path}.function.strict"),
        ))
    return specs


def _tool_choice(raw: Any, tools: list[ToolSpec]) -> ToolChoice:
    names = [t.name for t in tools]
    if raw is None or raw == "auto":
        return ToolChoice("auto")
    if raw == "none":
        return ToolChoice("none")
    if raw == "required":
        _needs_tools(tools, "tool_choice")
        return ToolChoice("required")
    if isinstance(raw, str):
        raise invalid("tool_choice", f"{raw!r} is not one of 'none', 'auto', 'required', or an object naming "
                      "a function.", code="invalid_value")
    choice = want(raw, dict, "tool_choice")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        _needs_tools(tools, "tool_choice")
        function = required(choice, kind, dict, f"tool_choice.{kind}")
        name = required(function, "name", str, f"tool_choice.{kind}.name")
        _known(name, names, f"tool_choice.{kind}.name")
        return ToolChoice("required", function=name)
    if kind == "allowed_tools":
        allowed = required(choice, "allowed_tools", dict, "tool_choice.allowed_tools")
        mode = allowed.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.allowed_tools.mode", f"{mode!r} is not 'auto' or 'required'.")
        picked: list[str] = []
        for i, ref in enumerate(required(allowed, "tools", list, "tool_choice.allowed_tools.tools")):
            path = f"tool_choice.allowed_tools.tools[{i}]"
            ref = want(ref, dict, path)
            key = "custom" if ref.get("type") == "custom" else "function"
            function = required(ref, key, dict, f"{path}.{key}")
            name = required(function, "name", str, f"{path}.{key}.name")
            _known(name, names, f"{path}.{key}.name")
            picked.append(name)
        return ToolChoice(mode, allowed=picked)
    raise invalid("tool_choice.type", f"{kind!r} is not supported; expected 'function' or 'allowed_tools'.",
                  code="invalid_value")


def _needs_tools(tools: list[ToolSpec], param: str) -> None:
    if not tools:
        raise invalid(param, "a tool call can only be required when 'tools' lists at least one function.",
                      code="invalid_value")


def _known(name: str, names: list[str], param: str) -> None:
    if name not in names:
        raise invalid(param, f"no function named {name!r} in 'tools'; available: {', '.join(names) or '(none)'}.",
                      code="invalid_value")


def _response_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    fmt = want(raw, dict, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = required(fmt, "json_schema", dict, "response_format.json_schema")
        name = required(spec, "name", str, "response_format.json_schema.name")
        if not NAME_PATTERN.match(name):
            raise invalid("response_format.json_schema.name", f"{name!r} must be 1 to 64 letters, digits, "
                          "'_' or '-'.")
        schema = opt(spec, "schema", dict, "response_format.json_schema.schema")
        if schema is not None:
            check_json_schema(schema, "response_format.json_schema.schema")
        return {
            "type": "json_schema",
            "name": name,
            "schema": schema if schema is not None else {},
            "strict": bool(opt(spec, "strict", bool, "response_format.json_schema.strict")),
        }
    raise invalid("response_format.type", f"{kind!r} is not one of 'text', 'json_object', 'json_schema'.")


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    data = want(raw, dict, "metadata")
    if len(data) > MAX_METADATA_PAIRS:
        raise invalid("metadata", f"at most {MAX_METADATA_PAIRS} key-value pairs are allowed, but got {len(data)}.")
    for key, value in data.items():
        if len(key) > 64:
            raise invalid(f"metadata.{key[:64]}", "keys may be at most 64 characters long.")
        if not isinstance(value, str) or len(value) > 512:
            raise invalid(f"metadata.{key}", "values must be strings of at most 512 characters.",
                          code="invalid_type")
    return dict(data)

