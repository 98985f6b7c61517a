"""The local model's speed and memory: tokens per second, time to first token, RSS.

One run, no network. For each thread count (1 and every core), the bundled
SmolLM2-135M-Instruct is loaded by the ``local_model`` provider inside a kernel, then
each prompt is generated alternately by the engine directly (llama.cpp plus our token
loop, nothing else) and as a kernel run (queue, worker thread, thread -> asyncio
bridge, tool policy, run record), so machine noise hits both columns alike. Greedy
sampling, so both paths produce the same tokens; the model's evaluated prompt is
forgotten before every sample, so each time to first token includes the full prefill
(in service, a repeated system prompt is reused and the first token comes sooner). Printed: load time, process RSS
before and after loading, median time to first token, median decode tokens/s, and the
kernel path's ratio to the direct one; plus grammar-constrained JSON generation.

    .venv/bin/python benchmarks/bench_local_model.py [--repeats 3] [--max-tokens 64] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from kernel import Limits, Message, TextDelta, TextPart, Turn, Usage  # noqa: E402
from kernel.testing import build_app, default_config, merge  # noqa: E402
from plugins.local_model.engine import Sampling  # noqa: E402
from plugins.local_model.options import default_threads  # noqa: E402
from plugins.local_model.prompt import prompt_parts  # noqa: E402
from plugins.local_model.provider import LocalModelProvider  # noqa: E402

PROMPTS = {
    "short": "What is the capital of France?",
    "explain": "Explain in a few sentences why the sky is blue.",
    "story": "Write a short story about a robot who learns to paint.",
}
JSON_FORMAT = {"type": "json_schema", "name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                    "hobbies": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "hobbies"]}}


def rss_mib() -> float:
    """Resident set size of this process, in MiB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Sample:
    ttft: float  # seconds to the first token
    tokens: int
    decode_seconds: float  # from the first token to the last

    @property
    def tok_per_s(self) -> float:
        return (self.tokens - 1) / self.decode_seconds if self.tokens > 1 and self.decode_seconds > 0 else 0.0


def turn_for(prompt: str, max_tokens: int, response_format: dict[str, Any] | None = None) -> Turn:
    return Turn(agent="main", input=[Message("user", [TextPart(prompt)])], system="Answer helpfully.",
                limits=Limits(max_output_tokens=max_tokens, temperature=0), response_format=response_format)


def direct(provider: LocalModelProvider, prompt: str, max_tokens: int) -> Sample:
    """The engine alone: render, tokenize, token loop (the provider is idle meanwhile)."""
    engine = provider.engine
    turn = turn_for(prompt, max_tokens)
    start = time.perf_counter()
    times: list[float] = []
    tokens = engine.fit(prompt_parts(turn), reserve=max_tokens)
    gen = engine.generate(tokens, Sampling(max_tokens=max_tokens, temperature=0, top_p=1,
                                           repeat_penalty=provider.options.repeat_penalty),
                          lambda _: times.append(time.perf_counter()), threading.Event())
    end = time.perf_counter()
    first = times[0] if times else end
    return Sample(first - start, gen.completion_tokens, end - first)


async def through_kernel(kernel: Any, prompt: str, max_tokens: int,
                         response_format: dict[str, Any] | None = None) -> Sample:
    """A whole kernel run: admission, queue, worker thread, bridge, run record."""
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    run = kernel.runs.start(turn_for(prompt, max_tokens, response_format))
    async for ev in run.events():
        if isinstance(ev, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(ev, Usage):
            tokens = ev.output_tokens
    end = time.perf_counter()
    first = first or end
    return Sample(first - start, tokens, end - first)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def bench_threads(n_threads: int, repeats: int, max_tokens: int, state: Path) -> dict[str, Any]:
    rss_before = rss_mib()
    config = merge(default_config(state / f"state{n_threads}"), {
        "plugins": {"local_model": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", "n_threads": n_threads, "max_queue": 4}},
        "agents": {"main": {"provider": "local"}},
    })
    app = build_app(config, state / "plugins.toml")
    async with app.test_app():
        kernel = app.extensions["kernel"]
        provider = kernel.providers["local"]
        rss_loaded = rss_mib()
        rows: dict[str, dict[str, list[Sample]]] = {}
        for name, prompt in PROMPTS.items():
            rows[name] = {"direct": [], "kernel": []}
            for _ in range(repeats):
                # Alternate the two paths so noise from other processes hits both alike, and
                # forget the evaluated prompt first so neither reuses the other's prefill.
                provider.engine.llm.reset()
                rows[name]["direct"].append(await asyncio.to_thread(direct, provider, prompt, max_tokens))
                provider.engine.llm.reset()
                rows[name]["kernel"].append(await through_kernel(kernel, prompt, max_tokens))
        json_samples = []
        for _ in range(repeats):
            provider.engine.llm.reset()
            json_samples.append(await through_kernel(kernel, "Invent a person and describe them.", max_tokens * 2,
                                                     JSON_FORMAT))
        rss_after = rss_mib()
        load_seconds = provider.engine.load_seconds
    return {"threads": n_threads, "rss_before": rss_before, "rss_loaded": rss_loaded, "rss_after": rss_after,
            "load": load_seconds, "rows": rows, "json": json_samples}


def report(result: dict[str, Any]) -> None:
    t = result["threads"]
    print(f"\n== n_threads = {t} ==")
    print(f"load (incl. warm-up): {result['load']:.2f} s   RSS: {result['rss_before']:.0f} MiB before load, "
          f"{result['rss_loaded']:.0f} MiB loaded (+{result['rss_loaded'] - result['rss_before']:.0f}), "
          f"{result['rss_after']:.0f} MiB after the runs")
    print(f"{'prompt':<8} {'path':<7} {'tokens':>6} {'TTFT ms':>8} {'tok/s':>7}   kernel/direct tok/s")
    all_direct: list[float] = []
    all_kernel: list[float] = []
    for name, paths in result["rows"].items():
        d_rate = median([s.tok_per_s for s in paths["direct"]])
        for path, samples in paths.items():
            rate = median([s.tok_per_s for s in samples])
            ratio = f"   {rate / d_rate:.2f}" if path == "kernel" and d_rate else ""
            print(f"{name:<8} {path:<7} {median([s.tokens for s in samples]):>6.0f} "
                  f"{median([s.ttft for s in samples]) * 1000:>8.0f} {rate:>7.1f}{ratio}")
        all_direct += [s.tok_per_s for s in paths["direct"]]
        all_kernel += [s.tok_per_s for s in paths["kernel"]]
    js = result["json"]
    print(f"{'json':<8} {'kernel':<7} {median([s.tokens for s in js]):>6.0f} "
          f"{median([s.ttft for s in js]) * 1000:>8.0f} {median([s.tok_per_s for s in js]):>7.1f}"
          "   (grammar-constrained json_schema)")
    print(f"overall median decode: direct {median(all_direct):.1f} tok/s, kernel {median(all_kernel):.1f} tok/s "
          f"(ratio {median(all_kernel) / max(median(all_direct), 1e-9):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", default=",".join(sorted({"1", str(default_threads())})),
                        help="comma-separated thread counts to compare (default: 1 and every core)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load1, load5, _ = os.getloadavg()
    print(f"cores: {default_threads()}   load average: {load1:.2f} (1 min) {load5:.2f} (5 min)   "
          f"python {sys.version.split()[0]}")
    print(f"max_tokens {args.max_tokens}, greedy, {args.repeats} repeats per prompt; medians shown")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.threads.split(",")):
            report(asyncio.run(bench_threads(n, args.repeats, args.max_tokens, Path(tmp))))


if __name__ == "__main__":
    main()
