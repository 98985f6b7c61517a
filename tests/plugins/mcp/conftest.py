"""A live gateway with real MCP servers: stdio (a subprocess) and streamable HTTP on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.testing import build_app, default_config, free_port, merge, serve_in_thread

TESTS_DIR = str(Path(__file__).resolve().parents[2])
STDIO = {"kind": "mcp", "command": sys.executable, "args": ["-m", "testsupport.mcp_servers", "stdio"],
         "cwd": TESTS_DIR, "timeout_seconds": 3}


@pytest.fixture(scope="module")
def mcp_http_url() -> Iterator[str]:
    """A streamable-HTTP MCP server (the test tools) in its own process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "testsupport.mcp_servers", "http", str(port)], cwd=TESTS_DIR)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("the MCP HTTP test server did not start")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


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
