"""RSS of a real ``kernel serve`` over rounds of 1,000 streams, per allocator setting.

For each variant a fresh ``kernel serve`` (openai_upstream -> the fake upstream,
``/v1/responses``) takes ``--rounds`` rounds of ``--streams`` streamed requests,
``--concurrency`` at a time: half ``store: true``, half ``store: false``, and half of
the clients hang up after the first events. RSS (``/proc/PID/status`` VmRSS) is read
after each round, once the gateway is idle. Printed per variant: RSS after every
round and the last round's over the first's (target: within 1.2).

Variants: ``default`` (what ``kernel serve`` does out of the box: a full garbage
collection and ``malloc_trim`` every 10 s, see kernel/memory.py), ``nokeeper`` (both
off: CPython's own collection schedule and glibc malloc), ``jemalloc`` (both off,
jemalloc preloaded from the system library, when the machine has it).

    .venv/bin/python benchmarks/bench_memory.py [--rounds 10] [--streams 1000] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_upstream import start_fake, stop_fake  # noqa: E402
from sidebyside import HOST, TOKEN, build_request, free_port  # noqa: E402

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_gateway(state: Path, upstream: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = state / "plugins.toml"
    config.write_text(
        f'[kernel]\nstate_dir = "state"\naccess_log = false\n[kernel.auth]\ntoken = "{TOKEN}"\n'
        "[plugins.openai_upstream]\nenabled = true\n[plugins.openresponses]\nenabled = true\n"
        '[agents.main]\nprovider = "up"\n'
        f'[providers.up]\nkind = "openai_upstream"\nbase_url = "{upstream}"\napi_key = "sk-bench"\n'
        'model = "fake-model"\nmax_concurrency = 1100\n', encoding="utf-8")
    kernel = Path(sys.executable).parent / "kernel"
    with (state / "stderr.txt").open("wb") as log:  # a pipe nobody reads would block the gateway's logging
        proc = subprocess.Popen([str(kernel), "serve", "--config", str(config), "--port", str(port)], cwd=state,
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((state / "stderr.txt").read_text())
        try:
            import socket

            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("kernel serve did not start")


async def one_stream(port: int, request: bytes, hang_up: bool) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        if hang_up:
            await reader.readuntil(b"response.output_text.delta")
            return
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def one_round(port: int, streams: int, concurrency: int) -> None:
    requests = [build_request("/v1/responses", port, {"model": "agent:main", "input": f"round {i}", "stream": True,
                                                      "store": i % 2 == 0}) for i in range(4)]
    for index in range(len(requests)):  # Connection: close, so each stream ends its socket
        requests[index] = requests[index].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    gate = asyncio.Semaphore(concurrency)

    async def run(i: int) -> None:
        async with gate:
            await one_stream(port, requests[i % 4], hang_up=(i // 2) % 2 == 1)

    await asyncio.gather(*(run(i) for i in range(streams)))


def measure(variant: str, env: dict[str, str], upstream: str, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-memory-{variant}-") as tmp:
        proc, port = start_gateway(Path(tmp), upstream, env)
        try:
            figures = [rss_mib(proc.pid)]
            for _ in range(args.rounds):
                asyncio.run(one_round(port, args.streams, args.concurrency))
                time.sleep(args.settle)  # runs finish, writes land, the idle trim (if any) runs
                figures.append(rss_mib(proc.pid))
                print(f"  {variant}: round {len(figures) - 1}: {figures[-1]:.0f} MiB", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--pieces", type=int, default=50, help="tokens per streamed answer")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before each RSS reading")
    parser.add_argument("--variants", default="default,nokeeper,jemalloc")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "KERNEL_MALLOC_TRIM", "KERNEL_GC_INTERVAL")}
    off = {"KERNEL_MALLOC_TRIM": "0", "KERNEL_GC_INTERVAL": "0"}
    variants = {
        "default": base,
        "nokeeper": {**base, **off},
        "jemalloc": {**base, **off, "LD_PRELOAD": str(JEMALLOC)},
    }
    chosen = [v for v in args.variants.split(",") if v != "jemalloc" or JEMALLOC.exists()]
    fake, upstream = start_fake(args.pieces)
    results = {}
    try:
        for variant in chosen:
            results[variant] = measure(variant, variants[variant], upstream, args)
    finally:
        stop_fake(fake)
    print(f"RSS (MiB) after rounds of {args.streams} streams ({args.concurrency} at a time, half stored, "
          "half hung up early)")
    for variant, figures in results.items():
        ratio = figures[-1] / figures[1]
        print(f"{variant:9} start {figures[0]:5.0f}  rounds " + " ".join(f"{f:4.0f}" for f in figures[1:])
              + f"   last/first {ratio:.2f} {'ok' if ratio <= 1.2 else 'ABOVE 1.2'}")
    print(json.dumps({v: [round(f) for f in figures] for v, figures in results.items()}))


if __name__ == "__main__":
    main()
