"""Real MCP servers for tests: the stdio tool config and a streamable-HTTP server process.

Both serve the test tools of :mod:`testsupport.mcp_servers`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kernel.testing import free_port

TESTS_DIR = str(Path(__file__).resolve().parents[1])
# A ``[tools.NAME]`` table: the stdio server as a subprocess of the gateway.
STDIO: dict[str, Any] = {"kind": "mcp", "command": sys.executable, "args": ["-m", "testsupport.mcp_servers", "stdio"],
                         "cwd": TESTS_DIR, "timeout_seconds": 3}


@contextmanager
def mcp_http_server(start_timeout: float = 30) -> Iterator[str]:
    """A streamable-HTTP MCP server in its own process; yields its URL, stops it after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "testsupport.mcp_servers", "http", str(port)], cwd=TESTS_DIR)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the MCP HTTP test server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
