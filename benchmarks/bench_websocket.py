"""Benchmark: a 20-turn continuation chain over WebSocket (store: false) versus HTTP (stored).

One real gateway (Hypercorn on loopback, the echo provider answering each turn's
newest message, so the model costs next to nothing and the transport and the
continuation are what is measured). Each round runs two chains side by side:

* **WebSocket**: one connection; every turn is ``response.create`` with
  ``store: false``, ``previous_response_id`` of the turn before and only the new
  message; the chain comes from the connection's in-memory cache.
* **HTTP**: one keep-alive client; every turn is a streamed ``POST /v1/responses``
  with ``store: true`` and ``previous_response_id``; the chain is read back from
  the SQLite response store (and each turn written to it).

A turn's latency runs from sending the request to receiving its terminal event.
Rounds alternate which chain goes first. The script prints the median and p90 per
turn of each, and the HTTP/WebSocket ratio (above 1: WebSocket is faster).

Usage::

    .venv/bin/python benchmarks/bench_websocket.py [--turns 20] [--rounds 5]

Touches only a temporary directory; takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets.sync.client as ws_client

from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread

CONFIG = {
    "plugins": {"openresponses": {"enabled": True}},
    "providers": {"words": {"kind": "echo"}},
    "agents": {"main": {"provider": "words"}},
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
MESSAGE = "please continue the task with the next step of the plan"


def websocket_chain(base: str, turns: int) -> list[float]:
    samples: list[float] = []
    url = base.replace("http://", "ws://") + "/v1/responses"
    with ws_client.connect(url, additional_headers=AUTH_HEADERS, max_size=None) as ws:
        previous: str | None = None
        for turn in range(turns):
            body = {"type": "response.create", "input": f"{MESSAGE} {turn}", "store": False,
                    "previous_response_id": previous}
            started = time.perf_counter()
            ws.send(json.dumps(body))
            while True:
                event = json.loads(ws.recv())
                if event["type"] in TERMINAL:
                    break
                if event["type"] == "error" and "sequence_number" not in event:
                    raise RuntimeError(f"turn {turn} failed: {event}")
            samples.append(time.perf_counter() - started)
            assert event["type"] == "response.completed", event
            previous = event["response"]["id"]
    return samples


def http_chain(base: str, turns: int) -> list[float]:
    samples: list[float] = []
    with httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        previous: str | None = None
        for turn in range(turns):
            body = {"input": f"{MESSAGE} {turn}", "store": True, "stream": True, "previous_response_id": previous}
            started = time.perf_counter()
            terminal = None
            with http.stream("POST", "/v1/responses", json=body) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[len("data: "):])
                        if event["type"] in TERMINAL:
                            terminal = event
                    elif line == "data: [DONE]":
                        break
            samples.append(time.perf_counter() - started)
            assert terminal is not None and terminal["type"] == "response.completed", terminal
            previous = terminal["response"]["id"]
    return samples


def describe(name: str, samples: list[float]) -> tuple[float, str]:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return median, f"{name:<28} median {median * 1000:7.2f} ms   p90 {p90 * 1000:7.2f} ms   (n={len(samples)})"


def main(turns: int, rounds: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(merge(default_config(Path(tmp) / "state"), CONFIG), Path(tmp) / "plugins.toml")
        with serve_in_thread(app) as base:
            websocket_chain(base, 3)  # warm both paths (imports, first SQLite writes)
            http_chain(base, 3)
            ws_samples: list[float] = []
            http_samples: list[float] = []
            for round_no in range(rounds):
                order = [(websocket_chain, ws_samples), (http_chain, http_samples)]
                for chain, into in order if round_no % 2 == 0 else reversed(order):
                    into.extend(chain(base, turns))
    print(f"{turns}-turn continuation chain, {rounds} rounds, per-turn latency (send -> terminal event)")
    ws_median, ws_line = describe("WebSocket, store:false", ws_samples)
    http_median, http_line = describe("HTTP SSE, stored previous", http_samples)
    print(ws_line)
    print(http_line)
    ratio = http_median / ws_median
    print(f"ratio HTTP/WebSocket (median): {ratio:.2f}x  ({'WebSocket' if ratio > 1 else 'HTTP'} is faster)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.exit(main(args.turns, args.rounds))
