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


def model_tool_name(toolset: str, tool: str) -> str:
    """The name the model sees for ``tool`` of ``toolset``: ``<toolset>__<tool>``, characters
    outside ``[A-Za-z0-9_-]`` replaced by ``_``, cut to 64 characters."""
    return _UNSAFE.sub("_", f"{toolset}{NAME_SEPARATOR}{tool}")[:MAX_NAME_LENGTH]


def check_name_clashes(turn: Turn, configured: list[str]) -> None:
    """400 when a client tool's name could be taken for a server-side one (it starts with a
    tool set's ``<name>__``), or when two tool sets share a name."""
    sets = [*configured, *(ts.name for ts in turn.toolsets)]
    seen: set[str] = set()
    for name in sets:
        if name in seen:
            raise ApiError(400, f"two server-side tool sets are named {name!r} (an agent's [tools] table and a "
                           "request's server_label, or two request tools); give each a distinct label",
                           param="tools", code="invalid_value")
        seen.add(name)
    for spec in turn.tools:
        for name in sets:
            if spec.name.startswith(name + NAME_SEPARATOR):
                raise ApiError(400, f"client tool {spec.name!r} clashes with server-side tool set {name!r}, whose "
                               f"tools the model sees as '{name}{NAME_SEPARATOR}<tool>'; rename the function",
                               param="tools", code="invalid_value")


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
    "NoToolOptions", "RequestTool", "ToolContext", "ToolInfo", "ToolKind", "ToolOutput", "ToolRegistry", "ToolSet",
    "check_name_clashes", "list_configured", "model_tool_name",
]
