"""Benchmark: /v1/chat/completions through the kernel vs. a bare Quart+Hypercorn endpoint.

Both servers run side by side in this one run, each in its own process on a loopback
port, and answer the same requests with the same bytes on the wire:

* non-streaming: requests/s of a ``chat.completion`` JSON answer;
* streaming: ``data:`` chunks/s of a ``chat.completion.chunk`` SSE stream.

The gateway path includes everything a real request pays for: bearer auth, agent
routing, request parsing into a Turn, the run registry and its task, the echo
provider, the tool policy, chunk encoding and SSE keep-alive plumbing. The bare
endpoint parses the JSON, splits the text into words the same way the echo provider
does and encodes identical chunks by hand. The ratio kernel/bare is the overhead
figure; the target is >= 0.6.

The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams so
client cost stays small next to server cost. Short phases alternate in ABBA order
(bare, kernel, kernel, bare ...); the figures are medians and the ratio is the median
of the per-round ratios, which damps a noisy machine.

Usage::

    .venv/bin/python benchmarks/bench_chat.py [--seconds 1] [--rounds 6] [--concurrency 8] [--words 64]

Runtime is bounded: about ``2 scenarios x 2 servers x rounds x seconds`` plus startup.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
TARGET_RATIO = 0.6
_WORD = re.compile(r"\S+\s*|\s+")  # the echo provider's word splitting


# --------------------------------------------------------------------------- servers


def kernel_app(state_dir: Path) -> Any:
    """The gateway with the chat plugin and the echo provider, access log off."""
    from kernel.app import create_app
    from kernel.config import settings_from_dict

    config = {
        "kernel": {"state_dir": str(state_dir), "auth": {"token": TOKEN}, "access_log": False},
        "agents": {"main": {"provider": "echo"}},
        "plugins": {"echo": {"enabled": True}, "chat_completions": {"enabled": True}},
    }
    return create_app(settings_from_dict(config, state_dir / "plugins.toml"))


def bare_app() -> Any:
    """The same wire behaviour with nothing but Quart: the floor the kernel is measured against."""
    from quart import Quart, Response, request

    app = Quart("bare")
    dumps = json.JSONEncoder().encode

    def chunk(cid: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": "agent:main",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    @app.get("/-/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def completions() -> Any:
        body = json.loads(await request.get_data())
        text = body["messages"][-1]["content"]
        words = _WORD.findall(text)
        cid, created = "chatcmpl-" + os.urandom(16).hex(), int(time.time())
        if not body.get("stream"):
            payload = {
                "id": cid, "object": "chat.completion", "created": created, "model": "agent:main",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(words) + 1, "completion_tokens": len(words),
                          "total_tokens": 2 * len(words) + 1},
            }
            return Response(json.dumps(payload, separators=(",", ":")), mimetype="application/json")

        async def stream() -> Any:
            # The same templating trick the plugin uses, so the floor is as lean as it can be.
            head = (f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
                    '"model":"agent:main","choices":[{"index":0,"delta":')
            tail = ',"logprobs":null,"finish_reason":null}]}\n\n'
            yield (head + '{"role":"assistant","content":"","refusal":null}' + tail).encode()
            for word in words:
                yield (head + '{"content":' + dumps(word) + "}" + tail).encode()
            yield chunk(cid, created, {}, "stop")
            yield b"data: [DONE]\n\n"

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return app


def serve(kind: str, port: int, state_dir: str) -> None:
    """Child-process entry: serve one app until SIGTERM."""
    from hypercorn.asyncio import serve as hypercorn_serve

    from kernel.serve import hypercorn_config

    app = kernel_app(Path(state_dir)) if kind == "kernel" else bare_app()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await hypercorn_serve(app, hypercorn_config(HOST, port, 1.0), shutdown_trigger=stop.wait)

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(kind: str, state_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), "--state", state_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(f"GET /-/health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{kind} server did not start within 30 s")


# --------------------------------------------------------------------------- client


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for these two answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            return status, b"".join(parts)
        length = int(re.search(rb"content-length: (\d+)", headers).group(1))  # type: ignore[union-attr]
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_request(port: int, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw


async def check(port: int, body: dict[str, Any], text: str) -> int:
    """One request whose answer is verified; returns the number of data: events (0 if JSON)."""
    conn = Connection(port)
    await conn.open()
    try:
        status, payload = await conn.post(build_request(port, body))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {payload[:300]!r}")
    if body.get("stream"):
        events = [e[6:] for e in payload.decode().split("\n\n") if e.startswith("data: ")]
        got = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        if got != text or events[-1] != "[DONE]":
            raise RuntimeError(f"port {port}: unexpected stream {payload[:300]!r}")
        return len(events)
    if json.loads(payload)["choices"][0]["message"]["content"] != text:
        raise RuntimeError(f"port {port}: unexpected answer {payload[:300]!r}")
    return 0


async def load(port: int, body: dict[str, Any], seconds: float, concurrency: int) -> tuple[int, int]:
    """Hammer for ``seconds`` with ``concurrency`` connections; returns (requests, data events)."""
    request = build_request(port, body)
    deadline = time.perf_counter() + seconds
    totals = [0, 0]

    async def worker() -> None:
        conn = Connection(port)
        await conn.open()
        try:
            while time.perf_counter() < deadline:
                status, payload = await conn.post(request)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
                totals[0] += 1
                totals[1] += payload.count(b"data: ")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return totals[0], totals[1]


# --------------------------------------------------------------------------- main


async def bench(ports: dict[str, int], args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    text = " ".join(f"word{i}" for i in range(args.words))
    message = {"model": "agent:main", "messages": [{"role": "user", "content": text}]}
    scenarios = [("non-streaming", "requests/s", message, 0), ("streaming", "chunks/s", {**message, "stream": True}, 1)]
    rows = []
    for name, unit, body, index in scenarios:
        counts = {kind: await check(port, body, text) for kind, port in ports.items()}
        if counts["kernel"] != counts["bare"]:
            raise RuntimeError(f"{name}: the servers answer differently ({counts})")
        for port in ports.values():  # warm-up
            await load(port, body, min(0.5, args.seconds), args.concurrency)
        rates: dict[str, list[float]] = {kind: [] for kind in ports}
        ratios = []
        for round_ in range(args.rounds):
            # ABBA order: a load spike from elsewhere on the machine hits both sides alike.
            order = ["bare", "kernel"] if round_ % 2 == 0 else ["kernel", "bare"]
            for kind in order:
                started = time.perf_counter()
                totals = await load(ports[kind], body, args.seconds, args.concurrency)
                rates[kind].append(totals[index] / (time.perf_counter() - started))
            ratios.append(rates["kernel"][-1] / rates["bare"][-1])
        bare, kernel, ratio = statistics.median(rates["bare"]), statistics.median(rates["kernel"]), \
            statistics.median(ratios)
        rows.append((f"{name} ({unit})", bare, kernel, ratio))
        print(f"{name:14} {unit:11} bare {bare:9.0f}   kernel {kernel:9.0f}   ratio {ratio:5.2f} "
              f"(rounds {min(ratios):.2f}..{max(ratios):.2f})  "
              f"{'ok' if ratio >= TARGET_RATIO else 'BELOW TARGET'} (>= {TARGET_RATIO})", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per scenario (medians count)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections in parallel")
    parser.add_argument("--words", type=int, default=64, help="words per answer (= content chunks per stream)")
    parser.add_argument("--serve", choices=["kernel", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.state)
        return 0

    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as state:
        try:
            ports = {}
            for kind in ("bare", "kernel"):
                proc, ports[kind] = start_server(kind, state)
                procs.append(proc)
            print(f"chat completions benchmark: {args.words} words/answer, {args.concurrency} connections, "
                  f"{args.rounds} x {args.seconds:g}s per server and scenario (medians), loopback only")
            budget = 4 * (args.rounds + 1) * args.seconds + 60
            rows = asyncio.run(asyncio.wait_for(bench(ports, args), budget))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0 if all(ratio >= TARGET_RATIO for *_, ratio in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
