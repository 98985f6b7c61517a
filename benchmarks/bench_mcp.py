"""One server-side MCP tool round trip through the gateway's agent loop, versus calling the
same MCP tool directly with the SDK, over stdio and streamable HTTP. Prints medians side by side.

    .venv/bin/python benchmarks/bench_mcp.py [--n 30]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the repo first: tests/plugins must not shadow plugins

from kernel.testing import AUTH_HEADERS, build_app, default_config, free_port, merge, serve_in_thread  # noqa: E402

TESTS = str(ROOT / "tests")


def start_http_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "testsupport.mcp_servers", "http", str(port)], cwd=TESTS,
                            stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/mcp"


async def direct(server: object, n: int) -> list[float]:
    times: list[float] = []
    async with Client(server, mode="legacy") as client:  # type: ignore[arg-type]
        await client.call_tool("add", {"a": 1, "b": 2})
        for _ in range(n):
            started = time.perf_counter()
            await client.call_tool("add", {"a": 1, "b": 2})
            times.append(time.perf_counter() - started)
    return times


def through_gateway(base: str, agent: str, n: int) -> list[float]:
    times: list[float] = []
    body = {"model": agent, "input": '/call t__add {"a": 1, "b": 2}', "store": False}
    with httpx.Client(headers=AUTH_HEADERS, timeout=60) as http:
        http.post(f"{base}/v1/responses", json=body).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            http.post(f"{base}/v1/responses", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def plain(base: str, n: int) -> list[float]:
    times: list[float] = []
    with httpx.Client(headers=AUTH_HEADERS, timeout=60) as http:
        for _ in range(n + 1):
            started = time.perf_counter()
            http.post(f"{base}/v1/responses", json={"model": "plain", "input": "3", "store": False})
            times.append(time.perf_counter() - started)
    return times[1:]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.2f} ms (p90 {sorted(values)[int(len(values) * 0.9) - 1] * 1000:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    n = parser.parse_args().n
    proc, url = start_http_server()
    stdio = StdioServerParameters(command=sys.executable, args=["-m", "testsupport.mcp_servers", "stdio"], cwd=TESTS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = merge(default_config(Path(tmp)), {
                "plugins": {"openresponses": {"enabled": True}, "mcp": {"enabled": True}},
                "providers": {"words": {"kind": "echo"}},
                "tools": {"t": {"kind": "mcp", "command": sys.executable, "cwd": TESTS,
                                "args": ["-m", "testsupport.mcp_servers", "stdio"]}},
                "agents": {"main": {"provider": "words"}, "plain": {"provider": "words"},
                           "stdio": {"provider": "words", "tools": ["t"]}},
            })
            with serve_in_thread(build_app(config, Path(tmp) / "plugins.toml")) as base:
                gw_stdio = through_gateway(base, "stdio", n)
                gw_plain = plain(base, n)
            config["tools"]["t"] = {"kind": "mcp", "url": url}
            with serve_in_thread(build_app(config, Path(tmp) / "plugins2.toml")) as base:
                gw_http = through_gateway(base, "stdio", n)
        direct_stdio = asyncio.run(direct(stdio, n))
        direct_http = asyncio.run(direct(url, n))
    finally:
        proc.terminate()
    print(f"n={n} sequential requests, median (p90)")
    print(f"{'':28}{'direct SDK call':>28}{'gateway loop round trip':>34}")
    print(f"{'stdio':28}{ms(direct_stdio):>28}{ms(gw_stdio):>34}")
    print(f"{'streamable HTTP':28}{ms(direct_http):>28}{ms(gw_http):>34}")
    print(f"{'gateway, no tools (echo)':28}{'':>28}{ms(gw_plain):>34}")


if __name__ == "__main__":
    main()
