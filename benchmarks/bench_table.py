"""The speed table in one run: bare Quart+Hypercorn, the gateway on echo and on the upstream.

Four server processes on loopback, so no GIL is shared: the fake OpenAI upstream
(``tests/testsupport/fake_openai.py``), a bare Quart+Hypercorn app answering
``POST /v1/responses`` with a small JSON (the floor), and the gateway with an ``echo``
agent and an ``up`` agent on ``openai_upstream`` -> the fake, both endpoint plugins on.
This process is the client (keep-alive HTTP/1.1 on raw asyncio streams, as in
``sidebyside.py``). Printed, each figure the median of ``--rounds`` rounds with the spread:

1. throughput at ``--concurrency`` (16) connections: bare, gateway ``/v1/responses`` on
   echo, on the upstream, and ``/v1/chat/completions`` on the upstream, each as a ratio to
   bare measured in the same round (targets: 0.7 on echo, 0.5 on the upstream);
2. added latency at c1 over calling the fake directly, non-streaming (target < 1.5 ms p50);
3. a 1,000-token streamed answer through the gateway against the fake direct, as events/s
   (target >= 0.7 of direct).

The order of the columns rotates every round, so a noisy machine hits them alike.

    .venv/bin/python benchmarks/bench_table.py [--rounds 3] [--seconds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_responses import bare_app  # noqa: E402
from bench_upstream import start_fake, stop_fake  # noqa: E402
from sidebyside import (  # noqa: E402
    TOKEN,
    Connection,
    Scenario,
    build_request,
    load,
    serve,
    start_server,
    stop_servers,
)

SHORT_PIECES = 8  # words in the fake's short answer (throughput and latency rows)
LONG_PIECES = 1000  # tokens in the long streamed answer
TARGETS = {"responses, echo": 0.7, "responses, upstream": 0.5, "chat, upstream": 0.5}


def gateway_app(upstream: str, state_dir: Path) -> Any:
    from kernel.testing import build_app, default_config, merge

    config = merge(default_config(state_dir / "state"), {
        "kernel": {"auth": {"token": TOKEN}, "access_log": False},
        "providers": {"up": {"kind": "openai_upstream", "base_url": upstream, "api_key": "sk-bench",
                             "model": "fake-model", "max_concurrency": 64}},
        "agents": {"main": {"provider": "echo"}, "up": {"provider": "up"}},
        "plugins": {"openai_upstream": {"enabled": True}, "openresponses": {"enabled": True},
                    "chat_completions": {"enabled": True}},
    })
    return build_app(config, state_dir / "plugins.toml")


def rows(text: str) -> dict[str, tuple[str, Scenario]]:
    """Column name -> (path, scenario); the bare and echo answers carry ``text``."""
    responses = {"input": text, "store": False}
    chat = {"messages": [{"role": "user", "content": text}]}
    return {
        "bare": ("/v1/responses", Scenario("bare", "requests/s", {"model": "x", **responses})),
        "responses, echo": ("/v1/responses", Scenario("echo", "requests/s", {"model": "agent:main", **responses})),
        "responses, upstream": ("/v1/responses", Scenario("up", "requests/s", {"model": "agent:up", **responses})),
        "chat, upstream": ("/v1/chat/completions", Scenario("chat", "requests/s", {"model": "agent:up", **chat})),
    }


async def throughput(ports: dict[str, int], args: argparse.Namespace) -> dict[str, list[float]]:
    columns = rows(" ".join(f"word{i}" for i in range(SHORT_PIECES)))
    rates: dict[str, list[float]] = {name: [] for name in columns}
    names = list(columns)
    for name in names:  # warm-up
        path, scenario = columns[name]
        await load(path, ports[name], scenario, 0.5, args.concurrency)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            path, scenario = columns[name]
            started = time.perf_counter()
            requests, _ = await load(path, ports[name], scenario, args.seconds, args.concurrency)
            rates[name].append(requests / (time.perf_counter() - started))
    return rates


async def sequential_ms(port: int, request: bytes, count: int) -> list[float]:
    conn = Connection(port)
    await conn.open()
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, payload = await conn.post(request)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return times


async def added_latency(gateway: int, upstream: int, count: int, rounds: int) -> dict[str, list[float]]:
    """Per round: p50 of gateway minus p50 of the fake direct, per gateway endpoint (ms)."""
    direct = build_request("/v1/chat/completions", upstream, {
        "model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    through = {
        "responses": build_request("/v1/responses", gateway, {"model": "agent:up", "input": "hi", "store": False}),
        "chat": build_request("/v1/chat/completions", gateway, {
            "model": "agent:up", "messages": [{"role": "user", "content": "hi"}]}),
    }
    added: dict[str, list[float]] = {name: [] for name in through}
    for _ in range(rounds):
        for name, request in through.items():
            base = statistics.median(await sequential_ms(upstream, direct, count))
            ours = statistics.median(await sequential_ms(gateway, request, count))
            added[name].append(ours - base)
    return added


async def long_stream(gateway: int, upstream: int, rounds: int) -> list[float]:
    """Per round: the gateway's events/s over the fake direct's, for a 1,000-token stream."""
    direct = build_request("/v1/chat/completions", upstream, {
        "model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    ours = build_request("/v1/responses", gateway, {"model": "agent:up", "input": "hi", "stream": True,
                                                    "store": False})
    ratios = []
    for _ in range(rounds):
        base = statistics.median(await sequential_ms(upstream, direct, 10))
        through = statistics.median(await sequential_ms(gateway, ours, 10))
        ratios.append(base / through)  # same number of token events on both sides
    return ratios


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


async def measure(args: argparse.Namespace, state: str) -> dict[str, Any]:
    fake_short, short_url = start_fake(SHORT_PIECES)
    fake_long, long_url = start_fake(LONG_PIECES)
    procs = []
    try:
        bare_proc, bare_port = start_server(__file__, "bare", state, None)
        procs.append(bare_proc)
        gateway_proc, gateway_port = start_server(__file__, "gateway", state, None, ["--upstream", short_url])
        procs.append(gateway_proc)
        long_proc, long_port = start_server(__file__, "gateway", state + "/long", None, ["--upstream", long_url])
        procs.append(long_proc)
        ports = {"bare": bare_port, "responses, echo": gateway_port, "responses, upstream": gateway_port,
                 "chat, upstream": gateway_port}
        upstream_port = int(short_url.rsplit(":", 1)[1].split("/")[0])
        long_upstream = int(long_url.rsplit(":", 1)[1].split("/")[0])
        rates = await throughput(ports, args)
        added = await added_latency(gateway_port, upstream_port, args.sequential, args.rounds)
        stream = await long_stream(long_port, long_upstream, args.rounds)
    finally:
        stop_servers(procs)
        stop_fake(fake_short)
        stop_fake(fake_long)
    return {"rates": rates, "added": added, "stream": stream}


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    rates = figures["rates"]
    print(f"throughput, {args.concurrency} connections, {args.rounds} rounds x {args.seconds:g} s (median, spread)")
    print(f"{'path':24}{'req/s':>26}{'vs bare':>24}   target")
    for name, values in rates.items():
        ratios = [ours / bare for ours, bare in zip(values, rates["bare"], strict=True)]
        target = TARGETS.get(name)
        verdict = "" if target is None else f">= {target}  {'ok' if statistics.median(ratios) >= target else 'BELOW'}"
        print(f"{name:24}{spread(values, 0):>26}{spread(ratios):>24}   {verdict}")
    for name, values in figures["added"].items():
        verdict = "ok" if statistics.median(values) < 1.5 else "ABOVE"
        print(f"added latency c1, {name:10} p50 {spread(values)} ms   target < 1.5 ms  {verdict}")
    stream = figures["stream"]
    verdict = "ok" if statistics.median(stream) >= 0.7 else "BELOW"
    print(f"1,000-token stream, events/s vs direct: {spread(stream)}   target >= 0.7  {verdict}")
    print(json.dumps({"rates": {k: [round(v) for v in vs] for k, vs in rates.items()},
                      "added_ms": {k: [round(v, 2) for v in vs] for k, vs in figures["added"].items()},
                      "stream_ratio": [round(v, 2) for v in stream]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=200, help="requests per c1 latency phase")
    parser.add_argument("--serve", choices=["bare", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bare":
        return serve(bare_app(), args.port, bare=True)
    if args.serve == "gateway":
        Path(args.state).mkdir(parents=True, exist_ok=True)
        return serve(gateway_app(args.upstream, Path(args.state)), args.port,
                     Path(args.profile) if args.profile else None)
    with tempfile.TemporaryDirectory(prefix="bench-table-") as state:
        figures = asyncio.run(measure(args, state))
    report(figures, args)


if __name__ == "__main__":
    main()
