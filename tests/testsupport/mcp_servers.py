"""MCP servers for tests and benchmarks, written with the SDK's high-level ``MCPServer``
(FastMCP in mcp 1.x). Run ``python -m testsupport.mcp_servers stdio`` for a stdio server or
``python -m testsupport.mcp_servers http PORT`` for streamable HTTP on 127.0.0.1:PORT/mcp."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("testtools")
_active = 0
_peak = 0


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def fail(message: str) -> str:
    """Always fails with the given message (a ToolError the model should read)."""
    raise ToolError(message)


@server.tool()
async def hang(seconds: float = 3600.0) -> str:
    """Sleep for a long time (tests of timeouts and cancel)."""
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def big(size: int) -> str:
    """Return ``size`` characters."""
    return "x" * size


@server.tool()
def die() -> str:
    """Kill the server process mid-call."""
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def overlap(tag: str, seconds: float = 0.5) -> str:
    """Wait, then say how many overlap calls were running at once at most (parallelism probe)."""
    global _active, _peak
    _active += 1
    _peak = max(_peak, _active)
    try:
        await asyncio.sleep(seconds)
    finally:
        _active -= 1
    return f"{tag}: peak {_peak}"


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
        return
    import uvicorn

    port = int(argv[2])
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv)
