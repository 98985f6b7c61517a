"""Benchmark: /v1/responses through the kernel vs. a bare Quart+Hypercorn endpoint.

Both servers run side by side in this one run, each in its own process on a loopback
port, and answer the same requests with the same wire shapes:

* non-streaming: requests/s of a complete ``ResponseResource`` JSON answer;
* streaming: SSE events/s of a full OpenResponses event stream (``response.created``,
  ``response.in_progress``, item and content-part events, one ``output_text.delta`` per
  word, the done events, ``response.completed``, ``data: [DONE]``).

The gateway path includes everything a real request pays for: bearer auth, agent
routing, body validation into a Turn, the run registry and its task, the echo
provider, the tool policy, the ResponseBuilder state machine and SSE keep-alive
plumbing. The bare endpoint parses the JSON, splits the text into words the way the
echo provider does, and encodes the same resource and events by hand. The ratio
kernel/bare is the overhead figure; the target is >= 0.6.

The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams so
client cost stays small next to server cost. Short phases alternate in ABBA order
(bare, kernel, kernel, bare ...); the figures are medians and the ratio is the median
of the per-round ratios, which damps a noisy machine.

Usage::

    .venv/bin/python benchmarks/bench_responses.py [--seconds 1] [--rounds 6] [--concurrency 8] [--words 64]

Runtime is bounded: about ``2 scenarios x 2 servers x rounds x seconds`` plus startup.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
TARGET_RATIO = 0.6
_WORD = re.compile(r"\S+\s*|\s+")  # the echo provider's word splitting


# --------------------------------------------------------------------------- servers


def kernel_app(state_dir: Path) -> Any:
    """The gateway with the openresponses plugin and the echo provider, access log off."""
    from kernel.app import create_app
    from kernel.config import settings_from_dict

    config = {
        "kernel": {"state_dir": str(state_dir), "auth": {"token": TOKEN}, "access_log": False},
        "agents": {"main": {"provider": "echo"}},
        "plugins": {"echo": {"enabled": True}, "openresponses": {"enabled": True}},
    }
    return create_app(settings_from_dict(config, state_dir / "plugins.toml"))


def _resource(rid: str, created: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": created,
        "completed_at": created if status == "completed" else None, "status": status,
        "incomplete_details": None, "model": "agent:main", "previous_response_id": None, "instructions": None,
        "output": output, "error": None, "tools": [], "tool_choice": "auto", "truncation": "disabled",
        "parallel_tool_calls": True, "text": {"format": {"type": "text"}}, "top_p": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "top_logprobs": 0, "temperature": 1.0,
        "reasoning": {"effort": None, "summary": None}, "usage": usage, "max_output_tokens": None,
        "max_tool_calls": None, "store": False, "background": False, "service_tier": "default", "metadata": {},
        "safety_identifier": None, "prompt_cache_key": None,
    }


def bare_app() -> Any:
    """The same wire behaviour with nothing but Quart: the floor the kernel is measured against."""
    from quart import Quart, Response, request

    app = Quart("bare")

    def event(seq: int, kind: str, **fields: Any) -> bytes:
        body = json.dumps({"type": kind, "sequence_number": seq, **fields}, ensure_ascii=False,
                          separators=(",", ":"))
        return f"event: {kind}\ndata: {body}\n\n".encode()

    @app.get("/-/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.post("/v1/responses")
    async def responses() -> Any:
        body = json.loads(await request.get_data())
        words = _WORD.findall(body["input"])
        text = "".join(words)
        rid, mid, created = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}", int(time.time())
        usage = {"input_tokens": len(words), "output_tokens": len(words), "total_tokens": 2 * len(words),
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}
        if not body.get("stream"):
            payload = _resource(rid, created, "completed", [item], usage)
            return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
                            mimetype="application/json")

        async def stream() -> Any:
            seq = 0

            def next_seq() -> int:
                nonlocal seq
                seq += 1
                return seq - 1

            at = {"item_id": mid, "output_index": 0, "content_index": 0}
            yield event(next_seq(), "response.created", response=_resource(rid, created, "in_progress", [], None))
            yield event(next_seq(), "response.in_progress", response=_resource(rid, created, "in_progress", [], None))
            yield event(next_seq(), "response.output_item.added", output_index=0,
                        item={**item, "status": "in_progress", "content": []})
            yield event(next_seq(), "response.content_part.added", **at, part={**part, "text": ""})
            for word in words:
                yield event(next_seq(), "response.output_text.delta", **at, delta=word, logprobs=[])
            yield event(next_seq(), "response.output_text.done", **at, text=text, logprobs=[])
            yield event(next_seq(), "response.content_part.done", **at, part=part)
            yield event(next_seq(), "response.output_item.done", output_index=0, item=item)
            yield event(next_seq(), "response.completed", response=_resource(rid, created, "completed", [item], usage))
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
    return (f"POST /v1/responses HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw


async def check(port: int, body: dict[str, Any], text: str) -> list[str]:
    """One request whose answer is verified; returns the event types (empty for JSON)."""
    conn = Connection(port)
    await conn.open()
    try:
        status, payload = await conn.post(build_request(port, body))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {payload[:300]!r}")
    if body.get("stream"):
        blocks = [b for b in payload.decode().split("\n\n") if b]
        events = [json.loads(b.split("\n", 1)[1][6:]) for b in blocks if b.startswith("event: ")]
        final = events[-1]["response"]["output"][0]["content"][0]["text"]
        if final != text or blocks[-1] != "data: [DONE]":
            raise RuntimeError(f"port {port}: unexpected stream {payload[:300]!r}")
        return [e["type"] for e in events]
    if json.loads(payload)["output"][0]["content"][0]["text"] != text:
        raise RuntimeError(f"port {port}: unexpected answer {payload[:300]!r}")
    return []


async def load(port: int, body: dict[str, Any], seconds: float, concurrency: int) -> tuple[int, int]:
    """Hammer for ``seconds`` with ``concurrency`` connections; returns (requests, SSE events)."""
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
                totals[1] += payload.count(b"\nevent: ") + payload.startswith(b"event: ")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return totals[0], totals[1]


# --------------------------------------------------------------------------- main


async def bench(ports: dict[str, int], args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    text = " ".join(f"word{i}" for i in range(args.words))
    request = {"model": "agent:main", "input": text}
    scenarios = [("non-streaming", "requests/s", request, 0), ("streaming", "events/s", {**request, "stream": True}, 1)]
    rows = []
    for name, unit, body, index in scenarios:
        shapes = {kind: await check(port, body, text) for kind, port in ports.items()}
        if shapes["kernel"] != shapes["bare"]:
            raise RuntimeError(f"{name}: the servers answer differently ({shapes})")
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
    parser.add_argument("--words", type=int, default=64, help="words per answer (= text deltas per stream)")
    parser.add_argument("--serve", choices=["kernel", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.state)
        return 0

    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-responses-") as state:
        try:
            ports = {}
            for kind in ("bare", "kernel"):
                proc, ports[kind] = start_server(kind, state)
                procs.append(proc)
            print(f"responses benchmark: {args.words} words/answer, {args.concurrency} connections, "
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
