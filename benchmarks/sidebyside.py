"""The side-by-side harness: one endpoint through the kernel vs. a bare Quart+Hypercorn app.

A benchmark script (``bench_chat.py``, ``bench_responses.py``) describes its endpoint
with a :class:`SideBySide`: the plugin to enable, the bare app that produces the same
wire answer with nothing but Quart, a check that both answer alike, and the scenarios
to measure. This module does the rest, the same way for every endpoint:

* each server runs in its own process on a loopback port (the script re-runs itself
  with ``--serve kernel|bare``), so no GIL is shared;
* the load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams,
  so client cost stays small next to server cost;
* short phases alternate in ABBA order (bare, kernel, kernel, bare ...); the figures
  are medians and the ratio is the median of the per-round ratios, which damps a
  noisy machine. The ratio kernel/bare is the overhead figure; the target is >= 0.6;
* each server's CPU time per request (Linux: from ``/proc``) is printed too: on a
  busy machine it moves far less than throughput, so it is the figure to compare
  between two versions of the code.

``--profile DIR`` runs both servers under cProfile and writes ``DIR/kernel.pstats`` and
``DIR/bare.pstats`` when they stop (the figures of such a run are not comparable: the
profiler slows both); ``--scenario NAME`` measures one scenario only.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
TARGET_RATIO = 0.6
WORD = re.compile(r"\S+\s*|\s+")  # the echo provider's word splitting
KINDS = ("bare", "kernel")


@dataclass(frozen=True)
class Scenario:
    """One measured load: a request body and what one unit of throughput is."""

    name: str  # "non-streaming", "streaming"
    unit: str  # "requests/s", "chunks/s" ...
    body: dict[str, Any]
    # Units in one answer's body; None counts requests.
    units_in: Callable[[bytes], int] | None = None


@dataclass(frozen=True)
class SideBySide:
    """What differs from one endpoint benchmark to the next."""

    title: str  # "chat completions"
    path: str  # "/v1/chat/completions"
    plugin: str  # the endpoint plugin enabled beside echo in the kernel
    bare_app: Callable[[], Any]
    # Given the answer text: the scenarios, in the order they are measured.
    scenarios: Callable[[str], list[Scenario]]
    # Verifies one answer (body sent, payload received, expected text) and returns its
    # shape; both servers must return equal shapes.
    check: Callable[[dict[str, Any], bytes, str], Any]
    words_help: str = "words per answer"


# --------------------------------------------------------------------------- servers


def kernel_app(plugin: str, state_dir: Path) -> Any:
    """The gateway with ``plugin`` and the echo provider, auth on, access log off."""
    from kernel.app import create_app
    from kernel.config import settings_from_dict

    config = {
        "kernel": {"state_dir": str(state_dir), "auth": {"token": TOKEN}, "access_log": False},
        "agents": {"main": {"provider": "echo"}},
        "plugins": {"echo": {"enabled": True}, plugin: {"enabled": True}},
    }
    return create_app(settings_from_dict(config, state_dir / "plugins.toml"))


def serve(app: Any, port: int, profile_to: Path | None = None, *, bare: bool = False) -> None:
    """Child-process entry: serve ``app`` until SIGTERM (under cProfile if ``profile_to``).

    ``bare`` serves with Hypercorn's own defaults (the floor), else with the kernel's
    Hypercorn config and connection handling, as ``kernel serve`` does.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from kernel.serve import hypercorn_config

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if bare:
            config = Config()
            config.bind = [f"{HOST}:{port}"]
            config.accesslog = None
        else:
            config = hypercorn_config(HOST, port, 1.0)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


    if profile_to is None:
        asyncio.run(main())
        return
    import cProfile

    with cProfile.Profile() as profiler:
        asyncio.run(main())
    profiler.dump_stats(profile_to)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(script: str, kind: str, state_dir: str, profile: str | None,
                 extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``script --serve kind [extra_args]`` and wait until its health route answers."""
    port = free_port()
    command = [sys.executable, script, "--serve", kind, "--port", str(port), "--state", state_dir, *extra_args]
    if profile:
        command += ["--profile", profile]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)  # a profiled server writes its stats first
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------- client


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for JSON and SSE answers."""

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


def build_request(path: str, port: int, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw


async def post_once(path: str, port: int, body: dict[str, Any]) -> bytes:
    """One request on a fresh connection; the payload of a 200 answer, else an error."""
    conn = Connection(port)
    await conn.open()
    try:
        status, payload = await conn.post(build_request(path, port, body))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {payload[:300]!r}")
    return payload


async def load(path: str, port: int, scenario: Scenario, seconds: float, concurrency: int) -> tuple[int, int]:
    """Hammer for ``seconds`` with ``concurrency`` connections; returns (requests, units served)."""
    request = build_request(path, port, scenario.body)
    units_in = scenario.units_in
    deadline = time.perf_counter() + seconds
    requests = units = 0

    async def worker() -> None:
        nonlocal requests, units
        conn = Connection(port)
        await conn.open()
        try:
            while time.perf_counter() < deadline:
                status, payload = await conn.post(request)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
                requests += 1
                units += 1 if units_in is None else units_in(payload)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests, units


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(spec: SideBySide, servers: dict[str, tuple[int, int]], args: argparse.Namespace) -> list[float]:
    """Check, warm up and measure every scenario; print one line each; return the ratios."""
    text = " ".join(f"word{i}" for i in range(args.words))
    ports = {kind: port for kind, (port, _) in servers.items()}
    ratios_out = []
    for scenario in spec.scenarios(text):
        if args.scenario and scenario.name != args.scenario:
            continue
        shapes = {kind: spec.check(scenario.body, await post_once(spec.path, port, scenario.body), text)
                  for kind, port in ports.items()}
        if shapes["kernel"] != shapes["bare"]:
            raise RuntimeError(f"{scenario.name}: the servers answer differently ({shapes})")
        for port in ports.values():  # warm-up
            await load(spec.path, port, scenario, min(0.5, args.seconds), args.concurrency)
        rates: dict[str, list[float]] = {kind: [] for kind in ports}
        cpu: dict[str, list[float]] = {kind: [] for kind in ports}  # server CPU seconds per request
        ratios = []
        for round_ in range(args.rounds):
            # ABBA order: a load spike from elsewhere on the machine hits both sides alike.
            for kind in KINDS if round_ % 2 == 0 else reversed(KINDS):
                pid = servers[kind][1]
                started, cpu_before = time.perf_counter(), cpu_seconds(pid)
                requests, units = await load(spec.path, ports[kind], scenario, args.seconds, args.concurrency)
                rates[kind].append(units / (time.perf_counter() - started))
                cpu_after = cpu_seconds(pid)
                if cpu_before is not None and cpu_after is not None:
                    cpu[kind].append((cpu_after - cpu_before) / max(1, requests))
            ratios.append(rates["kernel"][-1] / rates["bare"][-1])
        bare, kernel, ratio = statistics.median(rates["bare"]), statistics.median(rates["kernel"]), \
            statistics.median(ratios)
        ratios_out.append(ratio)
        cpu_note = ""
        if cpu["bare"] and cpu["kernel"]:
            cpu_note = (f"  server CPU/request: bare {statistics.median(cpu['bare']) * 1e6:.0f} us, "
                        f"kernel {statistics.median(cpu['kernel']) * 1e6:.0f} us")
        print(f"{scenario.name:14} {scenario.unit:11} bare {bare:9.0f}   kernel {kernel:9.0f}   ratio {ratio:5.2f} "
              f"(rounds {min(ratios):.2f}..{max(ratios):.2f})  "
              f"{'ok' if ratio >= TARGET_RATIO else 'BELOW TARGET'} (>= {TARGET_RATIO}){cpu_note}", flush=True)
    return ratios_out


def run(spec: SideBySide, script: str, description: str) -> int:
    """The benchmark's command line: measure both servers, or (``--serve``) be one of them.

    ``script`` is the benchmark file, which re-runs itself as each server.
    Exit status 1 when a ratio is below the target.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per scenario (medians count)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections in parallel")
    parser.add_argument("--words", type=int, default=64, help=spec.words_help)
    parser.add_argument("--scenario", help="measure only this scenario (e.g. non-streaming)")
    parser.add_argument("--profile", metavar="DIR", help="run both servers under cProfile; write "
                        "DIR/kernel.pstats and DIR/bare.pstats (figures are then not comparable)")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        app = kernel_app(spec.plugin, Path(args.state)) if args.serve == "kernel" else spec.bare_app()
        profile_to = Path(args.profile) / f"{args.serve}.pstats" if args.profile else None
        serve(app, args.port, profile_to, bare=args.serve == "bare")
        return 0
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.plugin}-") as state:
        try:
            servers = {}  # kind -> (port, pid)
            for kind in KINDS:
                proc, port = start_server(script, kind, state, args.profile)
                procs.append(proc)
                servers[kind] = (port, proc.pid)
            print(f"{spec.title} benchmark: {args.words} words/answer, {args.concurrency} connections, "
                  f"{args.rounds} x {args.seconds:g}s per server and scenario (medians), loopback only")
            budget = 4 * (args.rounds + 1) * args.seconds + 60
            ratios = asyncio.run(asyncio.wait_for(measure(spec, servers, args), budget))
        finally:
            stop_servers(procs)
    if args.profile:
        print(f"profiles: {Path(args.profile) / 'kernel.pstats'} and {Path(args.profile) / 'bare.pstats'}")
    return 0 if all(ratio >= TARGET_RATIO for ratio in ratios) else 1

