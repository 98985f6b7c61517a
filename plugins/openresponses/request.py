"""Parse and validate a ``CreateResponseBody`` into a neutral :class:`kernel.types.Turn`.

:func:`parse_create_body` checks the whole body without I/O (input items in
:mod:`plugins.openresponses.items`, tools, tool_choice and text format in
:mod:`plugins.openresponses.params`) and returns a :class:`ParsedRequest`: the
parameters the response echoes plus the parts of the turn. Media are loaded by
:func:`plugins.openresponses.items.resolve_items`; :func:`build_turn` then splits the
items into history and current input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernel import ApiError, ApprovalResponse, Item, Limits, Message, ToolChoice, ToolResult, ToolSpec, Turn
from plugins.openresponses import models as m
from plugins.openresponses.conversations.params import take_conversation
from plugins.openresponses.fields import check_fields
from plugins.openresponses.hosted import HostedToolsPolicy
from plugins.openresponses.items import Draft, SystemMessage, parse_input
from plugins.openresponses.params import parse_text, parse_tool_choice
from plugins.openresponses.resource import ResponseParams
from plugins.openresponses.server_tools import function_tool_paths, request_server_tools
from plugins.openresponses.tools import ParsedTools, parse_tools

# Request options an OpenAI-compatible upstream may forward as they are (Limits.hints).
_HINT_FIELDS = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "truncation")


@dataclass
class ParsedRequest:
    """A validated ``CreateResponseBody``: the echoed parameters plus the turn's parts."""

    params: ResponseParams
    items: list[Draft]
    system: str
    tools: list[ToolSpec]
    tool_choice: ToolChoice
    limits: Limits
    response_format: dict[str, Any] | None
    metadata: dict[str, str]
    user: str | None
    stream: bool
    background: bool
    needs_resolution: bool = False
    include: list[str] = field(default_factory=list)
    # The body's "input" exactly as sent (a string or item dicts), e.g. for a store to list.
    raw_input: Any = None
    # The input's system and developer messages, in order (also part of ``system``).
    system_messages: list[SystemMessage] = field(default_factory=list)
    # The tools as parsed: model-facing names, routes back, hosted tools left out.
    parsed_tools: ParsedTools = field(default_factory=ParsedTools)
    client_metadata: dict[str, str] | None = None
    # Top-level fields outside the known table (vendor flags): warned about, named in a header.
    ignored_fields: list[str] = field(default_factory=list)
    # ``conversation`` (an id), handled by plugins/openresponses/conversations/.
    conversation: str | None = None
    # Server-side tools (e.g. MCP servers) to build through the kernel: (field path, raw tool).
    server_tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Each function tool's name -> its field ("tools[i].name"), to name it in errors.
    tool_paths: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- entry points


def parse_create_body(data: dict[str, Any], hosted_tools: HostedToolsPolicy = "omit") -> ParsedRequest:
    """Validate the whole body (no I/O); 400 with the field path on the first problem.

    ``hosted_tools`` is the plugin's policy for hosted tool types (see
    :mod:`plugins.openresponses.hosted`).
    """
    data, conversation = take_conversation(data)  # conversations: split off before the spec's fields
    ignored = check_fields(data) if isinstance(data, dict) else []
    body = m.validate(m.CreateResponseBody, data, "")
    if body.input is None and body.previous_response_id is None:
        raise ApiError(400, "missing required parameter: 'input' (a string or an array of items)",
                       param="input", code="missing_required_parameter")
    parsed_tools = parse_tools(body.tools, hosted_tools)
    items, system_messages, needs = parse_input(body.input, tools=parsed_tools)
    tools, tools_echo = parsed_tools.specs, parsed_tools.echo
    choice, choice_echo = parse_tool_choice(body.tool_choice, parsed_tools)
    response_format, text_echo = parse_text(body.text)
    system = "\n\n".join(t for t in [body.instructions or "", *(text for _, text in system_messages)] if t)
    parallel = True if body.parallel_tool_calls is None else body.parallel_tool_calls
    reasoning = body.reasoning
    params = ResponseParams(
        model=body.model,
        instructions=body.instructions,
        previous_response_id=body.previous_response_id,
        tools=tools_echo,
        tool_choice=choice_echo,
        text=text_echo,
        truncation=body.truncation or "disabled",
        parallel_tool_calls=parallel,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        top_logprobs=body.top_logprobs or 0,
        reasoning={"effort": reasoning.effort if reasoning else None,
                   "summary": reasoning.summary if reasoning else None},
        max_output_tokens=body.max_output_tokens,
        max_tool_calls=body.max_tool_calls,
        store=True if body.store is None else body.store,
        background=bool(body.background),
        service_tier=body.service_tier or "default",
        metadata=dict(body.metadata or {}),
        safety_identifier=body.safety_identifier,
        prompt_cache_key=body.prompt_cache_key,
        user=body.user,
        tool_namespaces={name: [route.namespace, route.name] for name, route in parsed_tools.routes.items()
                         if route.namespace is not None},
    )
    # Penalties are range-checked by the model (-2..2); top_logprobs is echoed only.
    limits = Limits(max_output_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
                    max_tool_calls=body.max_tool_calls, parallel_tool_calls=parallel,
                    presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                    reasoning_effort=reasoning.effort if reasoning else None,
                    verbosity=text_echo.get("verbosity"),
                    hints={name: data[name] for name in _HINT_FIELDS if data.get(name) is not None})
    return ParsedRequest(
        params=params, items=items, system=system, tools=tools, tool_choice=choice, limits=limits,
        response_format=response_format, metadata=dict(body.metadata or {}), user=body.user,
        stream=bool(body.stream), background=bool(body.background), needs_resolution=needs,
        include=list(body.include or []),
        raw_input=body.input, system_messages=system_messages, parsed_tools=parsed_tools,
        client_metadata=data.get("client_metadata"), ignored_fields=ignored, conversation=conversation,
        server_tools=request_server_tools(body.tools), tool_paths=function_tool_paths(body.tools),
    )


@dataclass
class ParsedCompact:
    """A validated compaction request."""

    model: str
    items: list[Draft]
    system: list[SystemMessage]
    instructions: str | None
    previous_response_id: str | None
    needs_resolution: bool


def parse_compact_body(data: dict[str, Any]) -> ParsedCompact:
    """Validate a ``CompactResponseMethodPublicBody``; ``model`` is required (400 without it)."""
    body = m.validate(m.CompactBody, data, "")
    items, system, needs = parse_input(body.input)
    return ParsedCompact(model=body.model, items=items, system=system, instructions=body.instructions,
                         previous_response_id=body.previous_response_id, needs_resolution=needs)


def build_turn(parsed: ParsedRequest, items: list[Item], *, agent: str, history: list[Item] | None = None,
               session_key: str | None = None) -> Turn:
    """Split ``items`` into history and current input (the trailing user/tool items) and build the turn.

    ``history`` (e.g. a previous response's items) comes before everything the client sent.
    """
    cut = len(items)
    while cut > 0 and _is_current_input(items[cut - 1]):
        cut -= 1
    return Turn(
        agent=agent,
        input=items[cut:],
        history=[*(history or []), *items[:cut]],
        system=parsed.system,
        tools=parsed.tools,
        tool_choice=parsed.tool_choice,
        limits=parsed.limits,
        response_format=parsed.response_format,
        metadata=parsed.metadata,
        session_key=session_key,
        user=parsed.user,
        surface="responses",
    )


def _is_current_input(item: Item) -> bool:
    # An approval answer is new input like a tool result: the agent loop acts on it this turn.
    return isinstance(item, ToolResult | ApprovalResponse) or (isinstance(item, Message) and item.role == "user")
