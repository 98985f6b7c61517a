"""The openai_upstream provider's added latency per request, measured side by side.

One run, loopback only: a fake OpenAI-compatible upstream (tests/testsupport/fake_openai.py)
and the gateway (a real Hypercorn serving POST /v1/chat/completions, or /v1/responses,
with an openai_upstream provider pointed at the fake). Requests alternate between
calling the fake directly and calling it through the gateway, with the same streamed
answer, so machine noise hits both columns alike. Printed: median and p90 time to the
first text and to the end of the stream, and the gateway's added latency.

    .venv/bin/python benchmarks/bench_upstream.py [--requests 200] [--pieces 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
# The repo first: tests/plugins (a namespace folder) must not shadow the plugins package.
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from testsupport.fake_openai import FakeOpenAI, stream_reply, text_chunks, usage  # noqa: E402

from kernel.testing import (  # noqa: E402
    AUTH_HEADERS,
    build_app,
    default_config,
    merge,
    serve_in_thread,
)

Timing = tuple[float, float]  # (seconds to first text, seconds to end of stream)


def timed_stream(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str],
                 marker: str) -> Timing:
    """POST a streaming request and read it to the end; time the first marker line and the end."""
    start = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise SystemExit(f"{url} answered {resp.status_code}: {resp.read()[:300]!r}")
        for line in resp.iter_lines():
            if first is None and marker in line:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


def endpoint_available(name: str) -> bool:
    """Whether an endpoint plugin is importable (it is being written alongside)."""
    try:
        __import__(f"plugins.{name}.plugin")
    except ImportError:
        return False
    return True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve_fake(pieces: int) -> None:
    """Child process: the fake upstream, answering every request with the same stream."""
    reply = stream_reply(text_chunks(*[f"word{i} " for i in range(pieces)], usage_=usage(20, pieces)))
    with FakeOpenAI(default=reply) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def serve_gateway(upstream: str, plugin: str) -> None:
    """Child process: the gateway with an openai_upstream provider pointed at ``upstream``."""
    logging.disable(logging.INFO)  # Hypercorn's startup line would interleave with the figures
    with tempfile.TemporaryDirectory() as tmp:
        config = merge(default_config(Path(tmp) / "state"), {
            "kernel": {"access_log": False},
            "providers": {"up": {"kind": "openai_upstream", "base_url": upstream, "api_key": "sk-bench",
                                 "model": "fake-model", "max_concurrency": 4}},
            # echo streams the prompt back locally: the same gateway path without the upstream hop.
            "agents": {"main": {"provider": "up"}, "echo": {"provider": "echo"}},
            "plugins": {"openai_upstream": {"enabled": True}, plugin: {"enabled": True}},
        })
        app = build_app(config, Path(tmp) / "plugins.toml")
        with serve_in_thread(app) as base:
            print(base, flush=True)
            sys.stdin.read()


def child(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start this script in a role; return the process and the URL it prints."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"child {args[0]} failed to start")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per column (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--pieces", type=int, default=20, help="text chunks in each streamed answer")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop measuring after this long")
    parser.add_argument("--endpoint", choices=["chat", "responses"], default=None,
                        help="gateway surface to call (default: chat if the plugin exists, else responses)")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", metavar="UPSTREAM", help=argparse.SUPPRESS)
    args = parser.parse_args()

    endpoint = args.endpoint or ("chat" if endpoint_available("chat_completions") else "responses")
    plugin = {"chat": "chat_completions", "responses": "openresponses"}[endpoint]
    if args.serve_fake:
        return serve_fake(args.pieces)
    if args.serve_gateway:
        return serve_gateway(args.serve_gateway, plugin)
    if not endpoint_available(plugin):
        raise SystemExit(f"the {plugin} plugin is not available")

    # Fake, gateway and client each get their own process, so no GIL is shared and
    # the figures are those of separate servers (as in production).
    fake_proc, upstream = child("--serve-fake", "--pieces", str(args.pieces))
    gateway_proc, gateway = child("--endpoint", endpoint, "--serve-gateway", upstream)
    prompt = "Say twenty words."
    echo_prompt = "".join(f"word{i} " for i in range(args.pieces)).strip()
    try:
        with httpx.Client(timeout=30) as client:
            direct_body = {"model": "fake-model", "messages": [{"role": "user", "content": prompt}],
                           "stream": True, "stream_options": {"include_usage": True}}

            def gateway_request(agent: str, text: str) -> tuple[str, dict[str, Any]]:
                if endpoint == "chat":
                    return f"{gateway}/v1/chat/completions", {
                        "model": f"agent:{agent}", "messages": [{"role": "user", "content": text}], "stream": True}
                return f"{gateway}/v1/responses", {"model": f"agent:{agent}", "input": text, "stream": True,
                                                   "store": False}

            up_url, up_body = gateway_request("main", prompt)
            echo_url, echo_body = gateway_request("echo", echo_prompt)
            columns: dict[str, Callable[[], Timing]] = {
                "direct": lambda: timed_stream(client, f"{upstream}/chat/completions", direct_body,
                                               {"Authorization": "Bearer sk-bench"}, "word0"),
                "gateway": lambda: timed_stream(client, up_url, up_body, AUTH_HEADERS, "word0"),
                "echo": lambda: timed_stream(client, echo_url, echo_body, AUTH_HEADERS, "word0"),
            }
            for _ in range(args.warmup):
                for measure in columns.values():
                    measure()
            results: dict[str, list[Timing]] = {name: [] for name in columns}
            deadline = time.monotonic() + args.seconds
            while len(results["gateway"]) < args.requests and time.monotonic() < deadline:
                for name, measure in columns.items():  # alternate: noise hits every column alike
                    results[name].append(measure())
    finally:
        stop(gateway_proc)
        stop(fake_proc)
    report(endpoint, args.pieces, results)


def report(endpoint: str, pieces: int, results: dict[str, list[Timing]]) -> None:
    """Print the table and a JSON line of the headline figures."""
    n = len(results["gateway"])
    summary: dict[str, dict[str, float]] = {}
    for name, timings in results.items():
        firsts = [t[0] * 1000 for t in timings]
        totals = [t[1] * 1000 for t in timings]
        summary[name] = {"first_median": statistics.median(firsts), "first_p90": percentile(firsts, 0.9),
                         "total_median": statistics.median(totals), "total_p90": percentile(totals, 0.9)}
    d, g, e = summary["direct"], summary["gateway"], summary["echo"]
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/responses"
    print(f"openai_upstream added latency: {n} streamed requests per column, {pieces} text chunks each, "
          f"gateway surface {path}")
    print(f"{'ms':27}{'fake direct':>13}{'gateway+fake':>14}{'added':>9}{'ratio':>8}{'gateway+echo':>14}")
    for key, title in [("first_median", "first text, median"), ("first_p90", "first text, p90"),
                       ("total_median", "whole stream, median"), ("total_p90", "whole stream, p90")]:
        print(f"{title:27}{d[key]:>13.2f}{g[key]:>14.2f}{g[key] - d[key]:>9.2f}{g[key] / d[key]:>7.1f}x"
              f"{e[key]:>14.2f}")
    print("added = gateway+fake - fake direct; gateway+echo is the same gateway path with no upstream hop.")
    print(json.dumps({"requests": n, "pieces": pieces, "endpoint": endpoint,
                      "added_ms_median_first": round(g["first_median"] - d["first_median"], 2),
                      "added_ms_median_total": round(g["total_median"] - d["total_median"], 2),
                      "echo_ms_median_total": round(e["total_median"], 2)}))


if __name__ == "__main__":
    main()
