"""Health latency while large /v1/responses bodies arrive (issue 11 item 5).

Starts a real `kernel serve` (echo provider, store off so the figure is about parsing and
validation), then for several rounds: probes GET /-/health every 10 ms for a few seconds,
alone and while clients keep posting bodies of 100,000 input items (~3.5 MB). Prints
p50/p99/max health latency for both, per round.

    .venv/bin/python benchmarks/bench_large_bodies.py [--rounds 3] [--items 100000] [--seconds 4]
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernel.testing import TEST_TOKEN, serve_process

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}", "content-type": "application/json"}


def config(folder: Path) -> Path:
    path = folder / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\naccess_log = false\n[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[agents.main]\nprovider = "e"\n[providers.e]\nkind = "echo"\n'
        "[plugins.echo]\nenabled = true\n[plugins.openresponses]\nenabled = true\n", encoding="utf-8")
    return path


async def probe(client: httpx.AsyncClient, seconds: float) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        assert (await client.get("/-/health")).status_code == 200
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return latencies


async def load(base: str, body: bytes, stop: asyncio.Event, sent: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while not stop.is_set():
            answer = await client.post("/v1/responses", content=body, headers=AUTH)
            assert answer.status_code == 200, answer.text[:200]
            sent.append(len(body))


def summary(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"p50 {q[49]:7.1f} ms  p99 {q[98]:7.1f} ms  max {max(latencies):7.1f} ms  (n={len(latencies)})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    items = [{"type": "message", "role": "user", "content": f"item {i}"} for i in range(args.items)]
    body = json.dumps({"model": "main", "input": items, "store": False, "max_output_tokens": 16}).encode()
    print(f"body: {len(body) / 1e6:.1f} MB, {args.items} input items, {args.clients} posting clients")
    with tempfile.TemporaryDirectory() as tmp, serve_process(config(Path(tmp))) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
            for round_no in range(1, args.rounds + 1):
                idle = await probe(client, args.seconds)
                stop, sent = asyncio.Event(), []
                posters = [asyncio.create_task(load(served.base, body, stop, sent)) for _ in range(args.clients)]
                await asyncio.sleep(0.5)
                busy = await probe(client, args.seconds)
                stop.set()
                await asyncio.gather(*posters)
                print(f"round {round_no}: idle  {summary(idle)}")
                print(f"round {round_no}: large {summary(busy)}  large requests done: {len(sent)}")


if __name__ == "__main__":
    asyncio.run(main())
