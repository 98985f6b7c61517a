"""Benchmark: the gateway with the observability plugin on versus off, side by side in one run.

Both servers are the same gateway (echo provider, Chat Completions and OpenResponses,
bearer auth, access log off), each in its own process on a loopback port; ``on`` adds
``[plugins.observability]`` at its defaults (metrics, usage records, quotas; traces off
because no ``otlp_endpoint`` is set). With ``--limits`` the benchmark key also carries
requests_per_minute / tokens_per_minute / max_concurrent_runs / budget_tokens set high
enough never to refuse, so every request pays for the quota checks and headers.

Two servers of each kind run at once (started off, on, on, off); each round measures
all four, a different one first each time, and the figures are medians. The overhead
is ``1 - on/off`` of requests/s (target: under 5%); the off-vs-off difference printed
beside it is the noise floor of that run (a loaded machine favours some processes over
others). The load generator and server plumbing are benchmarks/sidebyside.py's.

Usage::

    .venv/bin/python benchmarks/bench_observability.py [--seconds 1] [--rounds 6] [--concurrency 8] [--limits]

Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sidebyside import TOKEN, Scenario, cpu_seconds, load, post_once, serve, start_server, stop_servers

TARGET_OVERHEAD = 0.05
KINDS = ("off", "on")
LIMITS = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "max_concurrent_runs": 10**6,
          "budget_tokens": 10**15}


def gateway(kind: str, state_dir: Path, limits: bool) -> Any:
    """The gateway; ``on`` enables the observability plugin (with ``limits``: on the benchmark key)."""
    from kernel.app import create_app
    from kernel.config import settings_from_dict

    plugins = {"echo": {"enabled": True}, "chat_completions": {"enabled": True}, "openresponses": {"enabled": True}}
    auth: dict[str, Any] = {"token": "main-token-not-used-here"}
    auth["keys"] = {"bench": {"secret": TOKEN, **(LIMITS if limits else {})}}
    if kind == "on":
        plugins["observability"] = {"enabled": True}
    config = {
        "kernel": {"state_dir": str(state_dir), "auth": auth, "access_log": False},
        "agents": {"main": {"provider": "echo"}},
        "plugins": plugins,
    }
    return create_app(settings_from_dict(config, state_dir / "plugins.toml"))


def scenarios(text: str) -> list[tuple[str, Scenario]]:
    chat = {"model": "main", "messages": [{"role": "user", "content": text}]}
    return [
        ("/v1/chat/completions", Scenario("chat", "requests/s", chat)),
        ("/v1/chat/completions", Scenario("chat-stream", "requests/s", {**chat, "stream": True})),
        ("/v1/responses", Scenario("responses", "requests/s", {"model": "main", "input": text})),
        ("/v1/responses", Scenario("resp-stream", "requests/s", {"model": "main", "input": text, "stream": True})),
    ]


async def measure(servers: list[tuple[str, int, int]], args: argparse.Namespace) -> list[float]:
    """Every scenario on all four servers (two per kind), in rotating order each round."""
    text = " ".join(f"word{i}" for i in range(args.words))
    overheads = []
    for path, scenario in scenarios(text):
        if args.scenario and scenario.name != args.scenario:
            continue
        for _, port, _ in servers:
            await post_once(path, port, scenario.body)
            await load(path, port, scenario, min(0.5, args.seconds), args.concurrency)  # warm-up
        rates: list[list[float]] = [[] for _ in servers]
        cpu: list[list[float]] = [[] for _ in servers]
        for round_ in range(args.rounds):
            order = list(range(len(servers)))
            order = order[round_ % len(order):] + order[:round_ % len(order)]  # each server goes first in turn
            for i in order:
                _, port, pid = servers[i]
                started, cpu_before = time.perf_counter(), cpu_seconds(pid)
                requests, _ = await load(path, port, scenario, args.seconds, args.concurrency)
                rates[i].append(requests / (time.perf_counter() - started))
                cpu_after = cpu_seconds(pid)
                if cpu_before is not None and cpu_after is not None:
                    cpu[i].append((cpu_after - cpu_before) / max(1, requests) * 1e6)
        kinds = {kind: [i for i, (k, _, _) in enumerate(servers) if k == kind] for kind in KINDS}
        per_round = {kind: [sum(rates[i][r] for i in idx) / len(idx) for r in range(args.rounds)]
                     for kind, idx in kinds.items()}
        ratios = [on / off for on, off in zip(per_round["on"], per_round["off"], strict=True)]
        a, b = kinds["off"]
        control = statistics.median(rates[b][r] / rates[a][r] for r in range(args.rounds))
        overhead = 1 - statistics.median(ratios)
        overheads.append(overhead)
        cpu_note = ""
        if all(cpu):
            off_cpu = statistics.median(c for i in kinds["off"] for c in cpu[i])
            on_cpu = statistics.median(c for i in kinds["on"] for c in cpu[i])
            cpu_note = f"  CPU/request off {off_cpu:.0f} us, on {on_cpu:.0f} us ({(on_cpu / off_cpu - 1) * 100:+.1f}%)"
        print(f"{scenario.name:12} {scenario.unit}  off {statistics.median(per_round['off']):8.0f}   "
              f"on {statistics.median(per_round['on']):8.0f}   overhead {overhead * 100:5.1f}% "
              f"(off vs off {abs(1 - control) * 100:4.1f}%)  "
              f"{'ok' if overhead < TARGET_OVERHEAD else 'OVER TARGET'} (< {TARGET_OVERHEAD:.0%}){cpu_note}",
              flush=True)
    return overheads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--words", type=int, default=64, help="words per echo answer (64, as the other benchmarks)")
    parser.add_argument("--scenario", help="measure only this scenario (chat, chat-stream, responses, resp-stream)")
    parser.add_argument("--limits", action="store_true", help="give the benchmark key (never reached) limits")
    parser.add_argument("--profile", metavar="DIR", help="run both servers under cProfile; write DIR/off.pstats "
                        "and DIR/on.pstats when they stop (figures then not comparable)")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        profile_to = Path(args.profile) / f"{args.serve}.pstats" if args.profile else None
        serve(gateway(args.serve, Path(args.state), args.limits), args.port, profile_to)
        return 0
    extra = ["--limits"] if args.limits else []
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # Two servers per kind, started off, on, on, off: a server's start order or
            # place on the machine must not pass for the plugin's cost (an off-vs-off
            # control is printed beside each figure).
            servers = []
            for n, kind in enumerate(("off", "on", "on", "off")):
                state = Path(tmp) / f"{kind}{n}"
                state.mkdir()
                profile = str(Path(args.profile) / f"{kind}{n}") if args.profile else None
                if profile:
                    Path(profile).mkdir(parents=True, exist_ok=True)
                proc, port = start_server(__file__, kind, str(state), profile, extra)
                procs.append(proc)
                servers.append((kind, port, proc.pid))
            print(f"observability plugin off vs on ({'with' if args.limits else 'without'} key limits), "
                  f"{args.concurrency} connections, {args.rounds} rounds x {args.seconds:g}s, medians", flush=True)
            overheads = asyncio.run(measure(servers, args))
        finally:
            stop_servers(procs)
    return 0 if max(overheads) < TARGET_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
