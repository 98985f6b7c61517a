"""The mcp plugin: MCP servers as server-side tools, through the official ``mcp`` SDK.

* ``[tools.NAME] kind = "mcp"``: a configured server (stdio ``command`` or HTTP ``url``)
  that agents list in ``[agents.NAME] tools``.
* ``{"type": "mcp", ...}`` in a request's ``tools``: a server the request brings, when
  ``[plugins.mcp] request_servers = true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from kernel import ToolKind, hookimpl
from plugins.mcp.request import request_tool
from plugins.mcp.settings import McpPluginSettings, McpServerSettings
from plugins.mcp.toolset import McpToolSet, configured_toolset

if TYPE_CHECKING:
    from kernel.runtime import Kernel


@hookimpl
def register_settings() -> type[BaseModel]:
    return McpPluginSettings


def _factory(name: str, options: BaseModel, kernel: Kernel) -> McpToolSet:
    assert isinstance(options, McpServerSettings)
    return configured_toolset(name, options)


def _request_limit(kernel: Kernel) -> tuple[int, str]:
    settings = kernel.plugin_settings("mcp")
    assert isinstance(settings, McpPluginSettings)
    return settings.max_request_servers, "[plugins.mcp] max_request_servers"


@hookimpl
def register_tools() -> list[ToolKind]:
    return [ToolKind(kind="mcp", factory=_factory, settings_model=McpServerSettings,
                     description="Model Context Protocol servers (stdio or streamable HTTP)",
                     request_type="mcp", from_request=request_tool, request_limit=_request_limit)]
