"""Benchmark: requests/s of ``POST /v1/responses`` with one process vs ``--workers 2``.

Three real ``kernel serve`` servers, one after the other, on the same config apart from
the store: SQLite with one process, PostgreSQL with one process, PostgreSQL with
``--workers 2``. Each is loaded by ``--clients`` keep-alive connections (a minimal
HTTP/1.1 client on asyncio streams, in this process) sending non-streaming
``store: true`` requests for ``--seconds`` per column, on two agents:

* ``echo``: the echo provider (the gateway's own cost: parse, run, store, answer);
* ``upstream``: an ``openai_upstream`` provider on the fake OpenAI server
  (``tests/testsupport/fake_openai.py``, its own process).

The table prints requests/s side by side. On a machine with C cores, N workers can
use up to min(N, C) of them; the load generator and the fake upstream use some too.

Usage::

    .venv/bin/python benchmarks/bench_scaleout.py [--seconds 5] [--clients 32]
        [--pg-url postgresql://postgres@127.0.0.1:5432/test]

Touches a temporary directory and a schema per PostgreSQL server, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # testsupport.fake_openai

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def serve_fake() -> None:
    """Child process: the fake upstream, answering each request with a short reply."""
    from testsupport.fake_openai import FakeOpenAI, stream_reply, text_chunks, usage

    reply = stream_reply(text_chunks(*[f"word{i} " for i in range(8)], usage_=usage(20, 8)))
    with FakeOpenAI(default=reply) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()


def write_config(folder: Path, store_url: str, upstream: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "plugins.toml"
    store = f'[kernel.store]\nurl = "{store_url}"\n' if store_url else ""
    path.write_text(
        f'[kernel]\nstate_dir = "state"\naccess_log = false\n{store}'
        f'[kernel.auth]\ntoken = "{TOKEN}"\n'
        '[agents.main]\nprovider = "echo"\n[agents.echo]\nprovider = "echo"\n[agents.upstream]\nprovider = "up"\n'
        f'[providers.up]\nkind = "openai_upstream"\nbase_url = "{upstream}"\napi_key = "sk-bench"\n'
        'model = "fake-model"\nmax_concurrency = 64\n'
        "[plugins.echo]\nenabled = true\n[plugins.openai_upstream]\nenabled = true\n"
        "[plugins.openresponses]\nenabled = true\n",
        encoding="utf-8")
    return path


def start_server(config: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    kernel = Path(sys.executable).parent / "kernel"
    proc = subprocess.Popen([str(kernel), "serve", "--config", str(config), "--port", str(port),
                             "--workers", str(workers), "--log-level", "WARNING"],
                            cwd=config.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kernel serve failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as conn:
                conn.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    time.sleep(1.0 if workers > 1 else 0)  # the other workers finish starting
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("kernel serve did not become healthy")


async def _client(port: int, request: bytes, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer: {head[:200]!r}")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


async def load(port: int, agent: str, seconds: float, clients: int) -> float:
    body = json.dumps({"model": agent, "input": "hello there, how are you today?", "store": True}).encode()
    request = (f"POST /v1/responses HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    await asyncio.gather(*[_client(port, request, time.monotonic() + 1.0, [0]) for _ in range(clients)])  # warm up
    counts = [0]
    started = time.monotonic()
    await asyncio.gather(*[_client(port, request, started + seconds, counts) for _ in range(clients)])
    return counts[0] / (time.monotonic() - started)


async def _pg(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--pg-url", default=os.environ.get("KERNEL_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--serve", choices=("fake",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "fake":
        serve_fake()
        return
    fake = subprocess.Popen([sys.executable, __file__, "--serve", "fake"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None and fake.stdin is not None
    upstream = fake.stdout.readline().strip()
    columns = [("SQLite, 1 process", "sqlite", 1), ("PostgreSQL, 1 process", "pg", 1),
               ("PostgreSQL, --workers 2", "pg", 2)]
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, backend, workers in columns:
                schema = f"bench_{uuid.uuid4().hex[:12]}"
                url = ""
                if backend == "pg":
                    asyncio.run(_pg(args.pg_url, f"CREATE SCHEMA {schema}"))
                    url = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}search_path={schema}"
                port = free_port()
                proc = start_server(write_config(Path(tmp) / schema, url, upstream), port, workers)
                try:
                    results[name] = {agent: asyncio.run(load(port, agent, args.seconds, args.clients))
                                     for agent in ("echo", "upstream")}
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                    if backend == "pg":
                        asyncio.run(_pg(args.pg_url, f"DROP SCHEMA {schema} CASCADE"))
                print(f"  measured {name}", file=sys.stderr, flush=True)
    finally:
        fake.stdin.close()
        fake.wait(20)
    print(f"\nPOST /v1/responses (store: true, non-streaming), requests/s, {args.clients} keep-alive clients, "
          f"{args.seconds:g} s per cell, {os.cpu_count()} cores")
    print(f"{'agent':12}" + "".join(f"{name:>26}" for name, _, _ in columns))
    for agent in ("echo", "upstream"):
        print(f"{agent:12}" + "".join(f"{results[name][agent]:>26.0f}" for name, _, _ in columns))


if __name__ == "__main__":
    main()
