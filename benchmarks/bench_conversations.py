"""Benchmark: the first page of a conversation's items, at 10, 1,000 and 10,000 items.

Three conversations are filled in a real SQLite file (alternating user and assistant
messages of ~40 words, among other conversations so the table is not just theirs),
then a real server (Hypercorn on loopback) answers ``GET /v1/conversations/{id}/items``
for each: the first page (the default ``order=desc``, ``limit=20``), the first page
oldest-first, and a page from a cursor in the middle. The same pages are also timed
at the storage layer (``SessionRecords.page``), without HTTP.

Pages are read by the transcript's primary key (session, position), so a page should
cost the same at any length: the script prints the medians side by side with the
ratio to the 10-item conversation and exits 1 if the largest conversation's first
page takes more than 3x the smallest's.

Usage::

    .venv/bin/python benchmarks/bench_conversations.py [--sizes 10,1000,10000] [--rounds 200]

Runs in well under a minute; touches only a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kernel.session_records import SessionRecords
from kernel.sessions import SessionStore
from kernel.store import SqliteStore
from kernel.testing import AUTH_HEADERS, build_app, default_config, merge, serve_in_thread
from kernel.types import Message, TextPart

WORDS = " ".join(f"word{i}" for i in range(40))
BATCH = 500
NOISE_CONVERSATIONS = 50
NOISE_ITEMS = 200


def message(i: int) -> Message:
    role = "user" if i % 2 == 0 else "assistant"
    return Message(role=role, parts=[TextPart(f"turn {i}: {WORDS}")])


async def fill(db_path: Path, sizes: list[int]) -> dict[int, tuple[str, str]]:
    """Conversations of each size plus noise; returns size -> (id, an item id in the middle)."""
    store = SqliteStore(db_path)
    await store.open()
    sessions = SessionStore(store)
    await sessions.open()
    records = SessionRecords(sessions)
    out: dict[int, tuple[str, str]] = {}
    for n in range(NOISE_CONVERSATIONS):
        record = await records.create(None, f"conv_noise{n}", metadata={}, items=[])
        await sessions.append(record.key, [message(i) for i in range(NOISE_ITEMS)])
    for size in sizes:
        record = await records.create(None, f"conv_bench{size}", metadata={"size": str(size)}, items=[])
        middle = ""
        for start in range(0, size, BATCH):
            ids = await sessions.append(record.key, [message(i) for i in range(start, min(size, start + BATCH))])
            if start <= size // 2 < start + BATCH:
                middle = ids[size // 2 - start]
        out[size] = (record.id, middle)
    await store.close()
    return out


async def storage_times(db_path: Path, targets: dict[int, tuple[str, str]], rounds: int) -> dict[int, float]:
    store = SqliteStore(db_path)
    await store.open()
    records = SessionRecords(SessionStore(store))
    times: dict[int, float] = {}
    for size, (conversation_id, _) in targets.items():
        record = await records.find(None, conversation_id)
        assert record is not None
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            page = await records.page(None, record, limit=20, order="desc", after=None)
            samples.append(time.perf_counter() - start)
        assert len(page.items) == min(20, size)
        times[size] = statistics.median(samples)
    await store.close()
    return times


def http_times(base: str, targets: dict[int, tuple[str, str]], rounds: int) -> dict[str, dict[int, float]]:
    scenarios = {
        "first page (desc)": lambda cid, mid: {},
        "first page (asc)": lambda cid, mid: {"order": "asc"},
        "page after middle": lambda cid, mid: {"after": mid},
    }
    out: dict[str, dict[int, float]] = {name: {} for name in scenarios}
    with httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        for name, params_of in scenarios.items():
            for size, (conversation_id, middle) in targets.items():
                params = params_of(conversation_id, middle)
                url = f"/v1/conversations/{conversation_id}/items"
                for _ in range(10):  # warm up
                    http.get(url, params=params)
                samples = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    resp = http.get(url, params=params)
                    samples.append(time.perf_counter() - start)
                # From the middle (desc) the page holds the items older than it.
                expected = min(20, size // 2 if "after" in params else size)
                assert resp.status_code == 200 and len(resp.json()["data"]) == expected, resp.text
                out[name][size] = statistics.median(samples)
    return out


def row(name: str, figures: dict[int, float], sizes: list[int]) -> str:
    base = figures[sizes[0]]
    cells = "".join(f"{figures[s] * 1000:>10.3f} ms ({figures[s] / base:4.2f}x)" for s in sizes)
    return f"{name:<28}{cells}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        started = time.perf_counter()
        targets = asyncio.run(fill(state / "kernel.sqlite3", sizes))
        print(f"filled {sum(sizes) + NOISE_CONVERSATIONS * NOISE_ITEMS} items in {time.perf_counter() - started:.1f} s")
        storage = asyncio.run(storage_times(state / "kernel.sqlite3", targets, args.rounds))
        config = merge(default_config(state), {"plugins": {"openresponses": {"enabled": True}}})
        app = build_app(config, Path(tmp) / "plugins.toml")
        with serve_in_thread(app) as base:
            over_http = http_times(base, targets, args.rounds)
    header = "".join(f"{f'{s:,} items':>24}" for s in sizes)
    print(f"{'median per page (20 items)':<28}{header}")
    print(row("storage: first page", storage, sizes))
    for name, figures in over_http.items():
        print(row(f"HTTP: {name}", figures, sizes))
    worst = over_http["first page (desc)"][sizes[-1]] / over_http["first page (desc)"][sizes[0]]
    if worst > 3:
        print(f"FAIL: the first page of {sizes[-1]:,} items takes {worst:.1f}x that of {sizes[0]:,}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
