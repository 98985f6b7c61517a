"""MCP servers as kernel tool sets: configured ones (``[tools.NAME]``) and those a request brings."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from kernel import ToolContext, ToolInfo, ToolOutput
from plugins.mcp.connection import McpConnection
from plugins.mcp.guard import GuardedTransport
from plugins.mcp.settings import McpServerSettings

log = logging.getLogger("plugins.mcp")

# A listing longer than this many pages is cut (a server that never stops paginating).
MAX_LIST_PAGES = 20


class ApprovalRule:
    """``require_approval``: "always", "never", or ``{"always": {"tool_names"}, "never": {"tool_names"}}``
    (tools named in neither list of the object form need approval, as at OpenAI)."""

    def __init__(self, default: bool, always: frozenset[str] = frozenset(),
                 never: frozenset[str] = frozenset()) -> None:
        self.default = default
        self.always = always
        self.never = never

    def __call__(self, tool: str) -> bool:
        if tool in self.never:
            return False
        if tool in self.always:
            return True
        return self.default


class McpToolSet:
    """One MCP server's tools, offered to the model by the kernel's agent loop."""

    def __init__(self, name: str, connection: McpConnection, *, timeout_seconds: float,
                 allowed_tools: list[str] | None, approval: ApprovalRule, per_request: bool) -> None:
        self.name = name
        self.connection = connection
        self.timeout_seconds = timeout_seconds
        self.allowed_tools = frozenset(allowed_tools) if allowed_tools is not None else None
        self.needs_approval = approval
        self.per_request = per_request
        self.cached: list[ToolInfo] | None = None
        self._cached_generation = -1
        self.last_error: str | None = None

    async def start(self) -> None:
        """Connect and list once at startup, so a broken server shows in the log early."""
        await self.list_tools()

    async def list_tools(self) -> list[ToolInfo]:
        """The server's tools (after ``allowed_tools``); cached until the session is replaced."""
        if self.cached is not None and self._cached_generation == self.connection.generation:
            return self.cached
        tools: list[ToolInfo] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await self.connection.request(lambda client, c=cursor: client.list_tools(cursor=c))
            for tool in page.tools:
                if self.allowed_tools is None or tool.name in self.allowed_tools:
                    tools.append(ToolInfo(name=tool.name, description=tool.description,
                                          parameters=tool.input_schema or {"type": "object", "properties": {}}))
            cursor = page.next_cursor
            if not cursor:
                break
        self.cached = tools
        self._cached_generation = self.connection.generation
        return tools

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Call one tool; the server's own error results come back with ``is_error``."""
        if self.allowed_tools is not None and name not in self.allowed_tools:
            return ToolOutput(f"tool {name!r} is not allowed on MCP server {self.name!r}", is_error=True)
        result = await self.connection.request(
            lambda client: client.call_tool(name, arguments, read_timeout_seconds=self.timeout_seconds))
        return ToolOutput(render_content(result), is_error=bool(result.is_error))

    async def aclose(self) -> None:
        await self.connection.aclose()


def render_content(result: Any) -> str:
    """A tool result's content blocks as text for the model."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')} returned by the tool]")
        else:
            parts.append(json.dumps(block.model_dump(mode="json", exclude_none=True), ensure_ascii=False))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def stdio_client_factory(settings: McpServerSettings) -> Any:
    """A factory of clients that start the configured command."""
    command = settings.command or ""
    if command in ("python", "python3"):
        command = sys.executable  # the gateway's own interpreter, so its packages are there
    params = StdioServerParameters(command=command, args=list(settings.args), env=dict(settings.env) or None,
                                   cwd=settings.cwd)
    return lambda: Client(params, mode="legacy")


def http_client_factory(url: str, headers: dict[str, str], *, allowed_hosts: frozenset[str] | None,
                        timeout: float) -> Any:
    """A factory of streamable-HTTP clients; ``allowed_hosts`` (for request servers) turns on the fetch guard."""

    def make() -> Client:
        transport = GuardedTransport(allowed_hosts) if allowed_hosts is not None else None
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0)),
                                  transport=transport, trust_env=False)
        return Client(_owned(http, url), mode="legacy")

    return make


def _owned(http: httpx2.AsyncClient, url: str) -> Any:
    """The SDK's transport, closing our HTTP client with it."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def transport() -> Any:
        async with http, streamable_http_client(url, http_client=http) as streams:
            yield streams

    return transport()


def configured_toolset(name: str, settings: McpServerSettings) -> McpToolSet:
    """The tool set for a ``[tools.NAME] kind = "mcp"`` table."""
    if settings.transport == "stdio":
        factory = stdio_client_factory(settings)
    else:
        factory = http_client_factory(settings.url or "", dict(settings.headers), allowed_hosts=None,
                                      timeout=settings.timeout_seconds)
    connection = McpConnection(name, factory, connect_timeout=settings.timeout_seconds)
    return McpToolSet(name, connection, timeout_seconds=settings.timeout_seconds,
                      allowed_tools=settings.allowed_tools,
                      approval=ApprovalRule(settings.require_approval == "always"), per_request=False)
