"""A live gateway with real MCP servers: stdio (a subprocess) and streamable HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testsupport.mcp_processes import STDIO, mcp_http_server

from kernel.testing import build_app, default_config, merge, serve_in_thread


@pytest.fixture(scope="module")
def mcp_http_url() -> Iterator[str]:
    """A streamable-HTTP MCP server (the test tools) in its own process."""
    with mcp_http_server() as url:
        yield url


def gateway_config(tmp: Path, http_url: str, **mcp_plugin: Any) -> dict[str, Any]:
    return merge(default_config(tmp), {
        "plugins": {"openresponses": {"enabled": True}, "chat_completions": {"enabled": True},
                    "mcp": {"enabled": True, "request_servers": True, "allowed_hosts": ["127.0.0.1"],
                            "timeout_seconds": 3, **mcp_plugin}},
        "providers": {"words": {"kind": "echo"}},
        "tools": {"calc": STDIO, "web": {"kind": "mcp", "url": http_url, "timeout_seconds": 3},
                  "picky": {**STDIO, "allowed_tools": ["add"]}},
        "agents": {"main": {"provider": "words"},
                   "tooly": {"provider": "words", "tools": ["calc"]},
                   "webby": {"provider": "words", "tools": ["web"]},
                   "picky": {"provider": "words", "tools": ["picky"]},
                   "short": {"provider": "words", "tools": ["calc"], "max_tool_iterations": 2}},
    })


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mcp_http_url: str) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("mcpgw")
    app = build_app(gateway_config(tmp, mcp_http_url), tmp / "plugins.toml")
    with serve_in_thread(app) as base:
        yield base
