"""Settings of the mcp plugin: ``[plugins.mcp]`` and ``[tools.NAME] kind = "mcp"`` tables."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class McpPluginSettings(BaseModel):
    """``[plugins.mcp]``: what requests may bring (configured servers need no switch)."""

    model_config = ConfigDict(extra="forbid")

    # Requests may name their own MCP servers ({"type": "mcp", "server_url": ...}) only when on.
    request_servers: bool = False
    # Hosts a request's server_url may name even though they resolve to non-public addresses
    # (the same rule as the media fetcher's allowed_hosts), e.g. ["127.0.0.1"] in tests.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Per-call timeout for request servers (they cannot set their own).
    timeout_seconds: float = Field(60.0, gt=0, le=3600)
    # Most MCP servers one request may name.
    max_request_servers: int = Field(8, ge=1, le=64)


class McpServerSettings(BaseModel):
    """``[tools.NAME] kind = "mcp"``: one MCP server, over stdio (``command``) or streamable HTTP (``url``)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    # HTTP headers for a url server; "${ENV}" references are expanded when plugins.toml loads.
    headers: dict[str, str] = Field(default_factory=dict)
    # Only these tools are offered to the model (all when unset).
    allowed_tools: list[str] | None = None
    # A call (and listing the tools) gives up after this long; the model reads a timeout error.
    timeout_seconds: float = Field(60.0, gt=0, le=3600)
    # "never" (the operator chose the server) or "always": ask the client before each call.
    require_approval: Literal["never", "always"] = "never"

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("set either command (a stdio server) or url (a streamable HTTP server), not both")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        if self.command is None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd apply to stdio servers (command) only")
        if self.url is None and self.headers:
            raise ValueError("headers apply to HTTP servers (url) only")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        """Which transport the server uses."""
        return "stdio" if self.command is not None else "http"
