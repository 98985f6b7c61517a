"""Benchmark: the observability plugin's CPU cost per request, in one process, no network.

``bench_observability.py`` measures requests/s of real servers; on a shared 2-core
machine its noise (the off-vs-off control) is often larger than the plugin's cost. This
one drives the same two gateways (plugin off / on, echo provider) through their ASGI
interface directly, in one process and thread, alternating off and on in short rounds,
and reads the process's own CPU clock (``time.process_time``): other processes on the
machine do not count, so the figure is the app's own work per request (Quart, the
kernel, the endpoint plugin, and the observability plugin when on), without Hypercorn
and sockets. The overhead printed is ``on/off - 1`` of CPU per request (median of the
per-round ratios, with the spread of the rounds).

Usage::

    .venv/bin/python benchmarks/bench_observability_cpu.py [--requests 300] [--rounds 15] [--limits]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_observability import gateway
from sidebyside import TOKEN

SCENARIOS = {
    "chat": ("/v1/chat/completions", {"model": "main", "messages": [{"role": "user", "content": "{text}"}]}),
    "chat-stream": ("/v1/chat/completions",
                    {"model": "main", "stream": True, "messages": [{"role": "user", "content": "{text}"}]}),
    "responses": ("/v1/responses", {"model": "main", "input": "{text}"}),
    "resp-stream": ("/v1/responses", {"model": "main", "input": "{text}", "stream": True}),
}


async def one(app: Any, path: str, body: bytes) -> int:
    """One request through the app's ASGI callable; returns the status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {TOKEN}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80), "extensions": {},
    }
    sent = False
    status = 0
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await app(scope, receive, send)
    return status


async def main_async(args: argparse.Namespace) -> None:
    text = " ".join(f"word{i}" for i in range(args.words))
    with tempfile.TemporaryDirectory() as tmp:
        apps = {}
        for kind in ("off", "on"):
            state = Path(tmp) / kind
            state.mkdir()
            app = gateway(kind, state, args.limits)
            await app.startup()
            apps[kind] = app
        print(f"observability plugin CPU per request, in process (ASGI, no network; "
              f"{'with' if args.limits else 'without'} key limits), {args.rounds} rounds x {args.requests} requests",
              flush=True)
        try:
            for name, (path, template) in SCENARIOS.items():
                if args.scenario and name != args.scenario:
                    continue
                body = json.dumps(template).replace("{text}", text).encode()
                for app in apps.values():  # warm-up
                    for _ in range(50):
                        assert await one(app, path, body) == 200
                per: dict[str, list[float]] = {"off": [], "on": []}
                for round_ in range(args.rounds):
                    for kind in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                        if args.no_gc:
                            gc.collect()
                            gc.disable()
                        started = time.process_time()
                        for _ in range(args.requests):
                            await one(apps[kind], path, body)
                        per[kind].append((time.process_time() - started) / args.requests * 1e6)
                        gc.enable()
                ratios = [on / off - 1 for on, off in zip(per["on"], per["off"], strict=True)]
                quartiles = statistics.quantiles(ratios, n=4)
                print(f"{name:12} CPU/request off {statistics.median(per['off']):6.0f} us   "
                      f"on {statistics.median(per['on']):6.0f} us   overhead {statistics.median(ratios) * 100:+5.1f}% "
                      f"(rounds: quartiles {quartiles[0] * 100:+.1f}% .. {quartiles[2] * 100:+.1f}%, "
                      f"min {min(ratios) * 100:+.1f}%, max {max(ratios) * 100:+.1f}%)", flush=True)
        finally:
            for app in apps.values():
                await app.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round and kind")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--words", type=int, default=64)
    parser.add_argument("--scenario", choices=list(SCENARIOS))
    parser.add_argument("--limits", action="store_true", help="give the benchmark key (never reached) limits")
    parser.add_argument("--no-gc", action="store_true", help="the cyclic garbage collector off while measuring "
                        "(collected between rounds, uncounted): what GC adds shows as the difference")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
