"""Server-side tools: tool kinds plugins register, the tool sets built from ``[tools.NAME]``
tables, and the seam through which a request brings its own tool sets.

A *tool kind* (like a provider kind) names a kind (``mcp`` ...), the pydantic model for
its ``[tools.NAME]`` tables and a factory for a :class:`ToolSet`. A tool set lists tools
and calls one; the kernel's agent loop (:mod:`kernel.agentloop`) offers them to the model
and runs the calls. A kind may also declare the request tool ``type`` it handles (e.g.
``"mcp"`` in a Responses request's ``tools``): endpoints hand such tools to
:meth:`ToolRegistry.from_request` and never learn what they are.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from kernel.config import format_validation_error
from kernel.errors import ApiError, ConfigError
from kernel.plugins import per_plugin
from kernel.providers import NoOptions

if TYPE_CHECKING:
    from kernel.agents import Agent
    from kernel.runtime import Kernel
    from kernel.types import Turn

log = logging.getLogger("kernel.tools")

# Model-facing names: "<tool set>__<tool>", within what OpenAI-style function names allow.
NAME_SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME_LENGTH = 64
# Listing a tool set that has no timeout of its own gives up after this long.
DEFAULT_LIST_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """One tool a tool set offers: its own name, a description and a JSON Schema for its arguments."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (kept in conversations as a tool listing)."""
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolInfo:
        """Inverse of :meth:`to_dict`."""
        schema = data.get("input_schema")
        return cls(name=str(data["name"]), description=data.get("description"),
                   parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}})


@dataclass(slots=True)
class ToolOutput:
    """What a tool call returned; ``is_error`` marks a result the model should read as a failure."""

    text: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: handed to :meth:`ToolSet.call` (e.g. for logs or per-principal scoping)."""

    run_id: str
    agent: str
    principal: str | None
    call_id: str


@runtime_checkable
class ToolSet(Protocol):
    """A set of server-side tools (one ``[tools.NAME]`` table, or one a request brought).

    ``name`` is the label the model-facing names start with and endpoints show (e.g. an
    MCP ``server_label``). ``call`` may raise: the agent loop turns any exception into an
    error result with its message, and bounds the call by ``timeout_seconds``. It is
    cancelled (``asyncio.CancelledError``) when the run is.

    Optional attributes the loop reads with defaults: ``per_request`` (True for a set a
    request brought: its listing is announced to the client and reused from the
    conversation, and the set is closed when the run ends) and ``needs_approval(name) ->
    bool`` (the call waits for the client's approval).
    """

    name: str
    timeout_seconds: float | None

    async def list_tools(self) -> list[ToolInfo]: ...

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolOutput: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RequestTool:
    """A tool set built from one entry of a request's ``tools``, and that entry as the response echoes it
    (secrets such as headers removed)."""

    toolset: ToolSet
    echo: dict[str, Any]


# (raw tool object, its field path e.g. "tools[2]", kernel) -> RequestTool, or ApiError naming the field.
RequestFactory = Callable[[dict[str, Any], str, "Kernel"], Awaitable[RequestTool]]


@dataclass(frozen=True)
class ToolKind:
    """A kind of server-side tool set a plugin contributes.

    ``factory(name, options, kernel)`` builds the set for a ``[tools.NAME]`` table of this
    kind. ``request_type`` and ``from_request`` let requests bring their own sets: an
    endpoint that meets a tool of that ``type`` hands it to the kernel, which calls
    ``from_request``.
    """

    kind: str
    factory: Callable[[str, BaseModel, Kernel], ToolSet]
    settings_model: type[BaseModel] = NoOptions
    description: str = ""
    request_type: str | None = None
    from_request: RequestFactory | None = None
    # The most request tools of ``request_type`` one request may bring (None: no limit),
    # read from the kernel (e.g. an operator's setting), and where that limit is set.
    request_limit: Callable[[Kernel], tuple[int, str]] | None = None


def model_tool_name(toolset: str, tool: str) -> str:
    """The name the model sees for ``tool`` of ``toolset``: ``<toolset>__<tool>``, characters
    outside ``[A-Za-z0-9_-]`` replaced by ``_``, cut to 64 characters."""
    return _UNSAFE.sub("_", f"{toolset}{NAME_SEPARATOR}{tool}")[:MAX_NAME_LENGTH]


def check_set_names(turn: Turn, configured: list[str]) -> None:
    """400 when two server-side tool sets of one run share a name (an agent's ``[tools]``
    table and a request's label, or two request tools): their model-facing names would mix."""
    seen: set[str] = set()
    for name in [*configured, *(ts.name for ts in turn.toolsets)]:
        if name in seen:
            raise ApiError(400, f"two server-side tool sets are named {name!r} (an agent's [tools] table and a "
                           "request's server_label, or two request tools); give each a distinct label",
                           param="tools", code="invalid_value")
        seen.add(name)


@dataclass(frozen=True, slots=True)
class NameClash:
    """A client tool whose name is the model-facing name of a listed server-side tool."""

    client: str
    server: str
    tool: str

    def message(self, at: str) -> str:
        """E.g. ``tools[2].name 'calc__add' clashes with server tool 'add' of server 'calc'``."""
        return (f"{at} {self.client!r} clashes with server tool {self.tool!r} of server {self.server!r} "
                f"(the model sees that tool as {self.client!r}); rename the function")


def find_name_clash(client_names: list[str], listed: dict[str, list[ToolInfo]]) -> NameClash | None:
    """The first client tool name equal to a listed server tool's model-facing name, if any."""
    server_names: dict[str, tuple[str, str]] = {}
    for server, tools in listed.items():
        for info in tools:
            server_names.setdefault(model_tool_name(server, info.name), (server, info.name))
    for name in client_names:
        hit = server_names.get(name)
        if hit is not None:
            return NameClash(name, *hit)
    return None


def describe_error(exc: BaseException, what: str, timeout: float | None) -> str:
    """A message for the model (and the client) saying what went wrong."""
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"{what} timed out after {timeout:g} seconds"
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return describe_error(exc.exceptions[0], what, timeout)
    message = str(exc).strip()
    return f"{what} failed: {message}" if message else f"{what} failed: {type(exc).__name__}"


class ToolRegistry:
    """Tool kinds by name, the configured tool sets, and the request-tool seam."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.kinds: dict[str, ToolKind] = {}
        self.request_kinds: dict[str, ToolKind] = {}
        self.sets: dict[str, ToolSet] = {}

    def collect(self) -> None:
        """Gather the tool kinds every enabled plugin registers, then build the ``[tools.NAME]`` sets."""
        for plugin_name, impl in per_plugin(self.kernel.pm, "register_tools"):
            for kind in impl() or []:
                if kind.kind in self.kinds:
                    raise ConfigError(f"tool kind {kind.kind!r} is registered by two plugins")
                self.kinds[kind.kind] = kind
                if kind.request_type and kind.from_request is not None:
                    self.request_kinds[kind.request_type] = kind
                record = self.kernel.plugins.get(plugin_name)
                if record is not None:
                    record.tools.append(kind.kind)
        path = self.kernel.settings.path
        for name, table in self.kernel.settings.tools.items():
            options = dict(table)
            kind_name = options.pop("kind", None)
            kind = self.kinds.get(kind_name) if isinstance(kind_name, str) else None
            if kind is None:
                raise ConfigError(
                    f"{path}: [tools.{name}] kind = {kind_name!r} is not a tool kind of any enabled plugin; "
                    f"available kinds: {', '.join(sorted(self.kinds)) or '(none)'}"
                )
            try:
                opts = kind.settings_model.model_validate(options)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, path, model=kind.settings_model,
                                                          table=f"tools.{name}")) from None
            self.sets[name] = kind.factory(name, opts, self.kernel)

    def for_agent(self, agent: Agent) -> list[ToolSet]:
        """The configured tool sets an agent uses (names were checked at load)."""
        return [self.sets[name] for name in agent.tools]

    def handles(self, request_type: str) -> bool:
        """Whether some enabled plugin accepts request tools of this ``type``."""
        return request_type in self.request_kinds

    async def from_request(self, raw: dict[str, Any], at: str) -> RequestTool:
        """Build the tool set for a request's tool object ``raw`` (at field path ``at``)."""
        kind = self.request_kinds.get(str(raw.get("type")))
        if kind is None or kind.from_request is None:
            raise ApiError(400, f"unsupported tool type {raw.get('type')!r} at '{at}.type'", param=f"{at}.type",
                           code="invalid_value")
        return await kind.from_request(raw, at, self.kernel)

    async def from_request_tools(self, entries: list[tuple[str, dict[str, Any]]]) -> list[RequestTool]:
        """Build the tool sets for all of one request's server-side tools ``(field path, raw)``,
        held to each kind's ``request_limit`` (a 400 naming the first tool past it)."""
        counts: dict[str, int] = {}
        for at, raw in entries:
            kind = self.request_kinds.get(str(raw.get("type")))
            if kind is None or kind.request_limit is None:
                continue
            counts[kind.kind] = counts.get(kind.kind, 0) + 1
            limit, setting = kind.request_limit(self.kernel)
            if counts[kind.kind] > limit:
                raise ApiError(400, f"'{at}': a request may bring at most {limit} {raw.get('type')} tool(s) on this "
                               f"gateway ({setting}); this is number {counts[kind.kind]}",
                               param=at, code="invalid_value")
        return [await self.from_request(raw, at) for at, raw in entries]

    async def prepare(self, turn: Turn, agent: Agent, locate: Callable[[str], str] | None = None) -> None:
        """Before a run starts: list every server-side tool set it will offer and answer 400
        when a client tool's name equals a listed server tool's model-facing name.

        ``locate(client_tool_name)`` gives the request field naming that tool (e.g.
        ``tools[2].name``) for the message. The listings are kept on ``turn.listed`` so the
        agent loop does not list again; a set that cannot be listed is left to the loop,
        which reports it (its tools simply cannot clash).
        """
        try:
            await self._prepare(turn, agent, locate)
        except BaseException:
            # No run will own the request's sets (which listing may have connected): close them.
            await asyncio.shield(close_request_sets(turn))
            raise

    async def _prepare(self, turn: Turn, agent: Agent, locate: Callable[[str], str] | None) -> None:
        check_set_names(turn, list(agent.tools))
        toolsets = [*self.for_agent(agent), *turn.toolsets]
        if not toolsets:
            return
        from kernel.types import ToolListing

        known = {item.server: item for item in turn.history if isinstance(item, ToolListing) and item.error is None}

        async def listing(toolset: ToolSet) -> list[ToolInfo]:
            cached = known.get(toolset.name) if getattr(toolset, "per_request", False) else None
            if cached is not None:  # the loop reuses the conversation's listing too
                return [ToolInfo.from_dict(t) for t in cached.tools]
            timeout = toolset.timeout_seconds or DEFAULT_LIST_TIMEOUT
            try:
                async with asyncio.timeout(timeout):
                    tools = await toolset.list_tools()
            except Exception as exc:
                turn.listed[toolset.name] = describe_error(exc, "listing tools", timeout)
                return []
            turn.listed[toolset.name] = tools
            return tools

        results = await asyncio.gather(*(listing(ts) for ts in toolsets))
        clash = find_name_clash([spec.name for spec in turn.tools],
                                {ts.name: tools for ts, tools in zip(toolsets, results, strict=True)})
        if clash is not None:
            at = locate(clash.client) if locate is not None else "tools"
            raise ApiError(400, clash.message(at), param=at, code="invalid_value")

    async def start(self) -> None:
        """Start every configured set that has a ``start`` (e.g. to connect and list early)."""
        for name, toolset in self.sets.items():
            start = getattr(toolset, "start", None)
            if start is not None:
                try:
                    await start()
                except Exception as exc:  # a tool server that is down must not stop the gateway
                    log.warning("tool set %r did not start: %s", name, exc)

    async def aclose(self) -> None:
        """Close every configured set (stop subprocesses, close connections)."""
        for name, toolset in self.sets.items():
            try:
                await toolset.aclose()
            except Exception:
                log.exception("tool set %r failed to close", name)


async def close_request_sets(turn: Turn) -> None:
    """Close the tool sets a request brought (when no run will, e.g. the request was refused)."""
    for toolset in turn.toolsets:
        if getattr(toolset, "per_request", False):
            try:
                await toolset.aclose()
            except Exception:
                log.exception("tool set %r failed to close", toolset.name)


async def list_configured(registry: ToolRegistry) -> list[dict[str, Any]]:
    """Contact every configured tool set: its tools, or the error reaching it (for ``kernel tools list``)."""
    report: list[dict[str, Any]] = []
    try:
        for name, toolset in registry.sets.items():
            entry: dict[str, Any] = {"name": name, "kind": registry.kernel.settings.tools[name].get("kind"),
                                     "tools": [], "error": None}
            try:
                async with asyncio.timeout(toolset.timeout_seconds or 30.0):
                    listed = await toolset.list_tools()
                entry["tools"] = [{"name": t.name, "model_name": model_tool_name(name, t.name),
                                   "description": t.description or ""} for t in listed]
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            report.append(entry)
    finally:
        await registry.aclose()
    return report


class NoToolOptions(NoOptions):
    """Settings model for tool kinds that take no options."""


__all__ = [
    "NameClash", "NoToolOptions", "RequestTool", "ToolContext", "ToolInfo", "ToolKind", "ToolOutput", "ToolRegistry",
    "ToolSet", "check_set_names", "close_request_sets", "describe_error", "find_name_clash", "list_configured",
    "model_tool_name",
]
