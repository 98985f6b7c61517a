"""A thousand slow streams at once against one stream at a time, through a real ``kernel serve``.

The fake OpenAI upstream streams ``--pieces`` tokens ``--delay`` seconds apart (a model
decoding at 1/delay tokens/s; by default 400 tokens 50 ms apart, the 20 s streams of issue
12's measurement: a much shorter stream mostly measures each request's fixed cost, which
is then shared by few tokens). The gateway (``/v1/responses``, openai_upstream -> fake,
``max_concurrency = 1100``) serves:

1. one fast stream of ``--fast-pieces`` (1,000) tokens at a time, from a second fake
   upstream that sends them without pause: the gateway's CPU per streamed token when it
   has nothing else to do (the reference);
2. ``--slow-single`` slow streams one after another: the same per-token figure, paying a
   loop wake-up per token (on this VM a wake-up from idle alone costs 150-350 us of CPU);
3. ``--streams`` (1,000) slow streams opened in one burst and read to the end at once: CPU
   per token under load (target: at most 2x the fast single stream's), how long the
   streams took against their nominal length (pieces x delay), how many failed;
4. the same burst through a bare asyncio relay (this script, ``--serve-relay``): it reads each
   request, opens the fake upstream and copies every upstream read to the client as one
   chunk, parsing nothing. It is asyncio's own floor for this traffic shape (one socket read
   and one write per token, on this machine's costly wake-ups);
5. the same relay as a Quart view on Hypercorn (``--serve-quart-relay``, Hypercorn's defaults
   but a backlog sized for the burst): the bare stack the gateway is built on, for this
   traffic shape, as bare Quart+Hypercorn is for the table;
6. while (3) runs: the kernel's listen-queue overflows (``ListenOverflows`` in
   /proc/net/netstat, counted system-wide, so run it on an otherwise quiet machine) and
   the upstream connect timeouts the gateway logged (targets: both 0).

CPU is read from /proc (all threads of the gateway), so it is steadier than wall time on
a busy machine. Each figure is printed for every one of ``--rounds`` rounds.

    .venv/bin/python benchmarks/bench_concurrency.py [--streams 1000] [--pieces 400] [--delay 0.05] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_memory import start_gateway  # noqa: E402
from bench_upstream import cpu_ns, start_fake, stop_fake  # noqa: E402
from sidebyside import HOST, build_request, free_port  # noqa: E402

DELTA = b"event: response.output_text.delta\n"
DONE = b"response.completed"
RELAY_TOKEN = b'"content": "word'  # one per token in the fake's chunks, which the relay passes on
RELAY_DONE = b"[DONE]"


def listen_overflows() -> int:
    """The system's TCP listen-queue overflow count so far (0 where /proc/net/netstat is missing)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


async def one_stream(port: int, request: bytes, marker: bytes = DELTA, done: bytes = DONE) -> tuple[int, float, bool]:
    """Stream one response to its end: (``marker`` count (text deltas), seconds taken, completed)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    deltas, tail, completed = 0, b"", False
    try:
        writer.write(request)
        while data := await reader.read(65536):
            window = tail + data
            deltas += window.count(marker) - tail.count(marker)
            completed = completed or done in window
            tail = data[-64:]
    finally:
        writer.close()
    return deltas, time.perf_counter() - started, completed


def stream_request(port: int, index: int) -> bytes:
    request = build_request("/v1/responses", port, {"model": "agent:main", "input": f"stream {index}",
                                                     "stream": True, "store": index % 2 == 0})
    return request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


async def run_streams(port: int, count: int, sequential: bool, relay: bool = False) -> list[tuple[int, float, bool]]:
    markers = (RELAY_TOKEN, RELAY_DONE) if relay else (DELTA, DONE)
    if sequential:
        return [await one_stream(port, stream_request(port, i), *markers) for i in range(count)]
    return list(await asyncio.gather(*(one_stream(port, stream_request(port, i), *markers) for i in range(count)),
                                     return_exceptions=False))


def measure(pid: int, port: int, count: int, sequential: bool, relay: bool = False) -> dict[str, float]:
    cpu_before, overflows_before = cpu_ns(pid), listen_overflows()
    started = time.perf_counter()
    results = asyncio.run(run_streams(port, count, sequential, relay))
    wall = time.perf_counter() - started
    tokens = sum(r[0] for r in results)
    durations = sorted(r[1] for r in results)
    return {
        "cpu_us_per_token": (cpu_ns(pid) - cpu_before) / 1000 / max(tokens, 1),
        "tokens": tokens,
        "failed": sum(1 for r in results if not r[2]),
        "median_s": statistics.median(durations),
        "p99_s": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
        "wall_s": wall,
        "overflows": listen_overflows() - overflows_before,
    }


# --------------------------------------------------------------------------- the bare relay


def relay_target(upstream: str) -> tuple[str, int, bytes]:
    """The fake upstream's host and port, and the streamed chat request both relays send it."""
    authority, _, path = upstream.removeprefix("http://").partition("/")
    host, _, port = authority.partition(":")
    body = b'{"model":"fake-model","messages":[{"role":"user","content":"hi"}],"stream":true}'
    request = (f"POST /{path}/chat/completions HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    return host, int(port), request


def serve_relay(port: int, upstream: str) -> None:
    """Child process: relay each request's stream from the fake upstream, parsing nothing."""
    host, upstream_port, request = relay_target(upstream)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            up_reader, up_writer = await asyncio.open_connection(host, upstream_port)
            up_writer.write(request)
            await up_reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n")
            while data := await up_reader.read(65536):
                writer.write(b"%x\r\n%b\r\n" % (len(data), data))  # the upstream's framing, as opaque bytes
            writer.write(b"0\r\n\r\n")
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port, backlog=2048)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_quart_relay(port: int, upstream: str) -> None:
    """Child process: the same relay as a Quart view served by Hypercorn (its defaults, but a
    backlog sized for the burst): the bare stack the gateway is built on, for this traffic."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config
    from quart import Quart, Response, request

    host, upstream_port, upstream_request = relay_target(upstream)
    app = Quart("relay")

    @app.post("/v1/responses")
    async def relay() -> Response:
        await request.get_data()
        up_reader, up_writer = await asyncio.open_connection(host, upstream_port)
        up_writer.write(upstream_request)
        await up_reader.readuntil(b"\r\n\r\n")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while data := await up_reader.read(65536):
                    yield data
            finally:
                up_writer.close()

        return Response(chunks(), content_type="text/event-stream")

    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 2048
    asyncio.run(hypercorn_serve(app, config))  # type: ignore[arg-type]


def start_relay(upstream: str, kind: str = "--serve-relay") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, kind, upstream, "--port", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the relay did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--single", type=int, default=3, help="fast streams measured one at a time")
    parser.add_argument("--slow-single", type=int, default=1, help="slow streams measured one at a time")
    parser.add_argument("--pieces", type=int, default=400, help="tokens per answer")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between the upstream's tokens")
    parser.add_argument("--fast-pieces", type=int, default=1000, help="tokens of the fast reference stream")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-relay", help=argparse.SUPPRESS)
    parser.add_argument("--serve-quart-relay", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        return serve_relay(args.port, args.serve_relay)
    if args.serve_quart_relay:
        return serve_quart_relay(args.port, args.serve_quart_relay)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this client holds a socket per stream
    nominal = args.pieces * args.delay
    fake, upstream = start_fake(args.pieces, args.delay)
    fast_fake, fast_upstream = start_fake(args.fast_pieces, 0.0)
    rows: list[tuple[dict[str, float], dict[str, float], dict[str, float]]] = []
    relayed: list[dict[str, float]] = []
    stack_relayed: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
            (Path(tmp) / "slow").mkdir()
            (Path(tmp) / "fast").mkdir()
            proc, port = start_gateway(Path(tmp) / "slow", upstream, env=None)  # type: ignore[arg-type]
            fast_proc, fast_port = start_gateway(Path(tmp) / "fast", fast_upstream, env=None)  # type: ignore[arg-type]
            relay_proc, relay_port = start_relay(upstream)
            stack_proc, stack_port = start_relay(upstream, "--serve-quart-relay")
            try:
                asyncio.run(run_streams(port, 2, sequential=True))  # warm up
                asyncio.run(run_streams(fast_port, 2, sequential=True))
                for round_no in range(1, args.rounds + 1):
                    fast = measure(fast_proc.pid, fast_port, args.single, sequential=True)
                    single = measure(proc.pid, port, args.slow_single, sequential=True)
                    burst = measure(proc.pid, port, args.streams, sequential=False)
                    relayed.append(measure(relay_proc.pid, relay_port, args.streams, sequential=False, relay=True))
                    stack_relayed.append(measure(stack_proc.pid, stack_port, args.streams, sequential=False,
                                                 relay=True))
                    rows.append((fast, single, burst))
                    print(f"round {round_no}: fast single {fast['cpu_us_per_token']:.0f} us/token; "
                          f"slow single {single['cpu_us_per_token']:.0f} us/token; "
                          f"{args.streams} at once {burst['cpu_us_per_token']:.0f} us/token, "
                          f"{burst['failed']:.0f} failed, median {burst['median_s']:.1f} s, "
                          f"p99 {burst['p99_s']:.1f} s (nominal {nominal:.1f} s), "
                          f"listen overflows {burst['overflows']:.0f}; bare relay "
                          f"{relayed[-1]['cpu_us_per_token']:.0f} us/token; Quart+Hypercorn relay "
                          f"{stack_relayed[-1]['cpu_us_per_token']:.0f} us/token", flush=True)
            finally:
                for served in (proc, fast_proc, relay_proc, stack_proc):
                    served.terminate()
                    served.wait(30)
                log = (Path(tmp) / "slow" / "stderr.txt").read_text(errors="replace")
    finally:
        stop_fake(fake)
        stop_fake(fast_fake)
    connect_timeouts = log.count("could not connect")
    ratios = [burst["cpu_us_per_token"] / fast["cpu_us_per_token"] for fast, _, burst in rows]
    print(f"\n{args.streams} concurrent streams of {args.pieces} tokens, {args.delay * 1000:.0f} ms apart "
          f"(nominal {nominal:.1f} s), {args.rounds} rounds")
    print(f"{'':32} {'min':>8} {'median':>8} {'max':>8}")
    for label, values in [
        ("fast single: CPU us/token", [f["cpu_us_per_token"] for f, _, _ in rows]),
        ("slow single: CPU us/token", [s["cpu_us_per_token"] for _, s, _ in rows]),
        ("burst: CPU us/token", [b["cpu_us_per_token"] for _, _, b in rows]),
        ("burst/fast (target <= 2)", ratios),
        ("bare relay burst: us/token", [r["cpu_us_per_token"] for r in relayed]),
        ("burst/bare relay", [b["cpu_us_per_token"] / r["cpu_us_per_token"]
                              for (_, _, b), r in zip(rows, relayed, strict=True)]),
        ("Quart+Hypercorn relay: us/token", [r["cpu_us_per_token"] for r in stack_relayed]),
        ("burst/Quart+Hypercorn relay", [b["cpu_us_per_token"] / r["cpu_us_per_token"]
                                         for (_, _, b), r in zip(rows, stack_relayed, strict=True)]),
        ("Quart+Hypercorn relay/fast", [r["cpu_us_per_token"] / f["cpu_us_per_token"]
                                        for (f, _, _), r in zip(rows, stack_relayed, strict=True)]),
        ("bare relay: median stream s", [r["median_s"] for r in relayed]),
        ("Quart relay: failed streams", [r["failed"] for r in stack_relayed]),
        ("burst: median stream s", [b["median_s"] for _, _, b in rows]),
        ("burst: p99 stream s", [b["p99_s"] for _, _, b in rows]),
        ("burst: failed streams", [b["failed"] for _, _, b in rows]),
        ("burst: listen overflows", [b["overflows"] for _, _, b in rows]),
    ]:
        print(f"{label:32} {min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}")
    print(f"upstream connect timeouts logged by the gateway: {connect_timeouts} (target 0)")


if __name__ == "__main__":
    main()
