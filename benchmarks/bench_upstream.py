"""The openai_upstream provider's added latency per request, measured side by side.

One run, loopback only, three processes so no GIL is shared:

* the fake upstream (``tests/testsupport/fake_openai.py``), answering every request
  with the same streamed completion;
* the gateway under Hypercorn (started like ``sidebyside.py`` starts its servers:
  this script re-runs itself with ``--serve gateway``), serving
  ``POST /v1/chat/completions`` (or ``/v1/responses``) with an ``openai_upstream``
  provider pointed at the fake, and an ``echo`` agent for the same path without the
  upstream hop;
* this process, the client: one keep-alive HTTP/1.1 connection per column on a
  blocking socket, so the client's own cost stays small next to the servers'.

Requests alternate between the columns (fake direct, gateway+fake, gateway+echo), so
machine noise hits them alike. Printed: median and p90 time to the first text and to
the end of the stream, the gateway's added latency, and each server's CPU time per
request (Linux ``/proc/PID/task/*/schedstat``), which a busy machine moves far less
than latency: it is the figure to compare between two versions of the code.

``--profile DIR`` runs the gateway under cProfile and writes ``DIR/gateway.pstats``
when it stops (the latency figures of such a run are not comparable).

    .venv/bin/python benchmarks/bench_upstream.py [--requests 200] [--pieces 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The repo first: tests/plugins (a namespace folder) must not shadow the plugins package.
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from sidebyside import HOST, TOKEN, build_request, serve, start_server, stop_servers  # noqa: E402

Timing = tuple[float, float, float]  # seconds to the first body byte, to the first text, to the end
MARKER = b"word0"  # the first word of every answer, upstream and echo alike
# "stored" (responses only): the gateway+fake column with `store: true`, whose first byte
# must not wait for the database.
COLUMNS = ("direct", "gateway", "stored", "echo")


# --------------------------------------------------------------------------- servers


def serve_fake(pieces: int, delay: float = 0.0) -> None:
    """Child process: the fake upstream, answering every request with the same stream.

    The fake serves from its own thread; this main thread only blocks on stdin (no
    GIL held) until the parent closes it.
    """
    from testsupport.fake_openai import FakeOpenAI, stream_reply, text_chunks, usage

    reply = stream_reply(text_chunks(*[f"word{i} " for i in range(pieces)], usage_=usage(20, pieces)), delay=delay)
    with FakeOpenAI(default=reply) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()


def gateway_app(upstream: str, plugin: str, state_dir: Path) -> Any:
    """The gateway: ``main`` on an openai_upstream provider, ``echo`` on the echo provider."""
    from kernel.testing import build_app, default_config, merge

    config = merge(default_config(state_dir / "state"), {
        "kernel": {"auth": {"token": TOKEN}, "access_log": False},
        "providers": {"up": {"kind": "openai_upstream", "base_url": upstream, "api_key": "sk-bench",
                             "model": "fake-model", "max_concurrency": 4}},
        # echo streams the prompt back locally: the same gateway path without the upstream hop.
        "agents": {"main": {"provider": "up"}, "echo": {"provider": "echo"}},
        "plugins": {"openai_upstream": {"enabled": True}, plugin: {"enabled": True}},
    })
    return build_app(config, state_dir / "plugins.toml")


def start_fake(pieces: int, delay: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """Start this script as the fake upstream (``delay`` s between pieces); return it and its URL."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "fake", "--pieces", str(pieces),
                             "--delay", str(delay)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith(f"http://{HOST}:"):
        proc.kill()
        raise SystemExit("the fake upstream failed to start")
    return proc, url


def stop_fake(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def endpoint_available(name: str) -> bool:
    """Whether an endpoint plugin is importable (it is being written alongside)."""
    try:
        __import__(f"plugins.{name}.plugin")
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- client


class KeepAlive:
    """One keep-alive HTTP/1.1 connection on a blocking socket; reads chunked or sized answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def timed(self, request: bytes) -> Timing:
        """Send ``request``, read the whole answer; time the first byte, the first :data:`MARKER`, the end."""
        start = time.perf_counter()
        first: float | None = None
        first_byte: float | None = None
        self.sock.sendall(request)
        status = self.file.readline()
        head = b""
        while (line := self.file.readline()) not in (b"\r\n", b""):
            head += line.lower()
        if not status.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"answered {status.strip()!r}")
        tail = b""  # the marker may straddle two chunks
        if b"transfer-encoding: chunked" in head:
            while size := int(self.file.readline().split(b";")[0], 16):
                data = self.file.read(size + 2)[:-2]
                if first_byte is None:
                    first_byte = time.perf_counter()
                if first is None and MARKER in tail + data:
                    first = time.perf_counter()
                tail = data[-len(MARKER):]
            self.file.readline()  # the blank line after the last chunk
        else:
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if MARKER in self.file.read(length):
                first = time.perf_counter()
        end = time.perf_counter()
        return (first_byte or first or end) - start, (first or end) - start, end - start

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def cpu_ns(pid: int) -> int:
    """CPU time of all of a process's threads so far, in ns (0 where /proc is missing)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # a thread that just ended
    except OSError:
        return 0
    return total


# --------------------------------------------------------------------------- measuring


def columns_for(endpoint: str) -> tuple[str, ...]:
    return COLUMNS if endpoint == "responses" else tuple(c for c in COLUMNS if c != "stored")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(args: argparse.Namespace, endpoint: str, upstream: str, gateway_port: int,
            pids: dict[str, int]) -> tuple[dict[str, list[Timing]], dict[str, dict[str, float]]]:
    """Warm up, then alternate the columns; return timings and CPU ns per request by column and server."""
    upstream_port = int(upstream.rsplit(":", 1)[1].split("/")[0])
    prompt = "Say twenty words."
    echo_prompt = " ".join(f"word{i}" for i in range(args.pieces))

    def gateway_request(agent: str, text: str, store: bool = False) -> bytes:
        if endpoint == "chat":
            return build_request("/v1/chat/completions", gateway_port, {
                "model": f"agent:{agent}", "messages": [{"role": "user", "content": text}], "stream": True})
        return build_request("/v1/responses", gateway_port, {
            "model": f"agent:{agent}", "input": text, "stream": True, "store": store})

    direct = build_request("/v1/chat/completions", upstream_port, {
        "model": "fake-model", "messages": [{"role": "user", "content": prompt}], "stream": True,
        "stream_options": {"include_usage": True}})
    requests = {"direct": direct, "gateway": gateway_request("main", prompt),
                "stored": gateway_request("main", prompt, store=True),
                "echo": gateway_request("echo", echo_prompt)}
    columns = columns_for(endpoint)
    conns = {name: KeepAlive(upstream_port if name == "direct" else gateway_port) for name in columns}
    calls: dict[str, Callable[[], Timing]] = {
        name: (lambda c=conns[name], r=requests[name]: c.timed(r)) for name in columns}
    timings: dict[str, list[Timing]] = {name: [] for name in columns}
    cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(pids, 0.0) for name in columns}
    try:
        for _ in range(args.warmup):
            for call in calls.values():
                call()
        deadline = time.monotonic() + args.seconds
        while len(timings["echo"]) < args.requests and time.monotonic() < deadline:
            for name, call in calls.items():  # alternate: noise hits every column alike
                before = {server: cpu_ns(pid) for server, pid in pids.items()}
                timings[name].append(call())
                for server, pid in pids.items():
                    cpu[name][server] += cpu_ns(pid) - before[server]
    finally:
        for conn in conns.values():
            conn.close()
    n = len(timings["echo"])
    return timings, {name: {s: ns / max(1, n) for s, ns in by_server.items()} for name, by_server in cpu.items()}


def report(endpoint: str, pieces: int, timings: dict[str, list[Timing]], cpu: dict[str, dict[str, float]]) -> None:
    """Print the table and a JSON line of the headline figures."""
    n = len(timings["gateway"])
    summary: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        figures: dict[str, float] = {}
        for index, what in enumerate(("byte", "first", "total")):
            ms = [t[index] * 1000 for t in values]
            figures[f"{what}_median"], figures[f"{what}_p90"] = statistics.median(ms), percentile(ms, 0.9)
        summary[name] = figures
    d, g, e = summary["direct"], summary["gateway"], summary["echo"]
    stored = summary.get("stored")
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/responses"
    print(f"openai_upstream added latency: {n} streamed requests per column, {pieces} text chunks each, "
          f"gateway surface {path}")
    header = f"{'ms':27}{'fake direct':>13}{'gateway+fake':>14}{'added':>9}{'ratio':>8}"
    header += f"{'store:true':>12}{'store cost':>12}" if stored else ""
    print(header + f"{'gateway+echo':>14}")
    for key, title in [("byte_median", "first byte, median"), ("byte_p90", "first byte, p90"),
                       ("first_median", "first text, median"), ("first_p90", "first text, p90"),
                       ("total_median", "whole stream, median"), ("total_p90", "whole stream, p90")]:
        line = f"{title:27}{d[key]:>13.2f}{g[key]:>14.2f}{g[key] - d[key]:>9.2f}{g[key] / d[key]:>7.1f}x"
        line += f"{stored[key]:>12.2f}{stored[key] - g[key]:>12.2f}" if stored else ""
        print(line + f"{e[key]:>14.2f}")
    print("added = gateway+fake - fake direct; store cost = the same with store: true - store: false;"
          " gateway+echo is the same gateway path with no upstream hop.")
    us = {name: {server: ns / 1000 for server, ns in by_server.items()} for name, by_server in cpu.items()}
    print(f"server CPU per request (us): fake direct: fake {us['direct']['fake']:.0f}; "
          f"gateway+fake: gateway {us['gateway']['gateway']:.0f} + fake {us['gateway']['fake']:.0f}; "
          f"gateway+echo: gateway {us['echo']['gateway']:.0f}")
    headline = {"requests": n, "pieces": pieces, "endpoint": endpoint,
                "added_ms_median_first": round(g["first_median"] - d["first_median"], 2),
                "added_ms_median_total": round(g["total_median"] - d["total_median"], 2),
                "stream_speed_vs_direct": round(d["total_median"] / g["total_median"], 2),
                "echo_ms_median_total": round(e["total_median"], 2),
                "gateway_cpu_us_upstream": round(us["gateway"]["gateway"]),
                "gateway_cpu_us_echo": round(us["echo"]["gateway"])}
    if stored:
        headline["store_true_first_byte_cost_ms"] = round(stored["byte_median"] - g["byte_median"], 2)
    print(json.dumps(headline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per column (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--pieces", type=int, default=20, help="text chunks in each streamed answer")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop measuring after this long")
    parser.add_argument("--endpoint", choices=["chat", "responses"], default=None,
                        help="gateway surface to call (default: chat if the plugin exists, else responses)")
    parser.add_argument("--profile", metavar="DIR", help="run the gateway under cProfile; write "
                        "DIR/gateway.pstats (latency figures are then not comparable)")
    parser.add_argument("--serve", choices=["fake", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()

    endpoint = args.endpoint or ("chat" if endpoint_available("chat_completions") else "responses")
    plugin = {"chat": "chat_completions", "responses": "openresponses"}[endpoint]
    if args.serve == "fake":
        return serve_fake(args.pieces, args.delay)
    if args.serve == "gateway":
        profile_to = Path(args.profile) / "gateway.pstats" if args.profile else None
        return serve(gateway_app(args.upstream, plugin, Path(args.state)), args.port, profile_to)
    if not endpoint_available(plugin):
        raise SystemExit(f"the {plugin} plugin is not available")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    fake_proc, upstream = start_fake(args.pieces)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-upstream-") as state:
            gateway_proc, gateway_port = start_server(
                __file__, "gateway", state, args.profile, ["--endpoint", endpoint, "--upstream", upstream])
            try:
                timings, cpu = measure(args, endpoint, upstream, gateway_port,
                                       {"gateway": gateway_proc.pid, "fake": fake_proc.pid})
            finally:
                stop_servers([gateway_proc])
    finally:
        stop_fake(fake_proc)
    report(endpoint, args.pieces, timings, cpu)
    if args.profile:
        print(f"profile: {Path(args.profile) / 'gateway.pstats'}")


if __name__ == "__main__":
    main()
