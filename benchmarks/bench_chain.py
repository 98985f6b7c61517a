"""Benchmark: how long a ``previous_response_id`` lookup takes as the chain grows.

Chains of 1, 100 and 1,000 turns are stored in a real SQLite file and in a fresh
schema on PostgreSQL (``--pg-url``; ``""`` skips it) (each turn: one
user message in, one assistant message out, as the plugin stores them), among
other owners' responses so the table is not just the chain. Then the plugin's own
lookup (``PersistentResponses.previous_items``: one recursive query over the
primary key, then the items as the model sees them) is timed on the newest turn.

Each response stores only its own items plus a link to its predecessor, so a lookup
should cost about the same per turn whatever the chain's length: the per-turn
figures should stay flat (roughly linear growth), never grow with the length
(quadratic). The script prints the figures and the ratios, and exits 1 if the
per-turn cost of the longest chain is more than 3x that of the 100-turn chain.

Usage::

    .venv/bin/python benchmarks/bench_chain.py [--lengths 1,100,1000] [--noise 2000]

Runs in a few seconds; touches only a temporary directory and a schema it drops.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kernel.store import SqliteStore, Store, open_store
from kernel.types import Message, TextPart, item_to_dict
from plugins.openresponses.persistent import PersistentResponses
from plugins.openresponses.resource import message_item, new_id
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.storage import ResponseRecord, SqlResponseStore

OWNER = "bench"
WORDS = " ".join(f"word{i}" for i in range(40))  # a modest turn: 40 words each way


def turn_record(rid: str, prev: str | None, owner: str, turn: int) -> ResponseRecord:
    question = f"question {turn}: {WORDS}"
    answer = message_item(new_id("msg"), "completed", f"answer {turn}: {WORDS}")
    return ResponseRecord(
        id=rid, owner=owner, status="completed", created_at=time.time(), previous_response_id=prev,
        resource={"id": rid, "object": "response", "status": "completed", "output": [answer]},
        input_items=[{"type": "message", "id": new_id("msg"), "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": question}]}],
        model_input=[item_to_dict(Message(role="user", parts=[TextPart(question)]))],
        output_items=[answer],
    )


async def build_chain(store: SqlResponseStore, length: int, owner: str) -> str:
    prev: str | None = None
    for turn in range(length):
        rid = new_id("resp")
        await store.create(turn_record(rid, prev, owner, turn))
        prev = rid
    assert prev is not None
    return prev


async def time_lookup(stored: PersistentResponses, head: str, length: int) -> float:
    """Best seconds of one lookup over enough repeats.

    The fastest run, not the median: on a shared machine other processes only ever add
    time, and a median of the few repeats a long chain allows swung by 3x between runs.
    """
    items = await stored.previous_items(head, OWNER)
    assert len(items) == 2 * length, (len(items), length)
    repeats = max(20, min(200, 2000 // length))
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await stored.previous_items(head, OWNER)
        samples.append(time.perf_counter() - started)
    return min(samples)


async def measure(store: Store, lengths: list[int], noise: int) -> dict[int, float]:
    """Build the chains (among ``noise`` other responses) in ``store`` and time each lookup."""
    await store.open()
    try:
        responses = SqlResponseStore(store)
        await responses.open()
        stored = PersistentResponses(OpenResponsesSettings(), responses)
        for i in range(noise // 10):  # other owners' chains share the table
            await build_chain(responses, 10, f"noise{i}")
        heads = {n: await build_chain(responses, n, OWNER) for n in lengths}
        return {n: await time_lookup(stored, heads[n], n) for n in lengths}
    finally:
        await store.close()


async def on_postgres(url: str, lengths: list[int], noise: int) -> dict[int, float]:
    """The same on PostgreSQL, in a schema of its own that is dropped afterwards."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        return await measure(open_store(f"{url}{sep}search_path={schema}", Path(".")), lengths, noise)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def main(lengths: list[int], noise: int, pg_url: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"SQLite": await measure(SqliteStore(Path(tmp) / "kernel.sqlite3"), lengths, noise)}
    if pg_url:
        results["PostgreSQL"] = await on_postgres(pg_url, lengths, noise)
    print(f"previous_response_id lookup ({noise} other responses in the table); ms per lookup (us per turn)")
    print(f"{'turns':>6} " + " ".join(f"{name:>22}" for name in results))
    for n in lengths:
        print(f"{n:>6} " + " ".join(f"{f[n] * 1000:>10.3f} ({f[n] / n * 1e6:>8.1f})" for f in results.values()))
    status = 0
    for name, figures in results.items():
        for shorter, longer in itertools.pairwise(lengths):
            growth = figures[longer] / figures[shorter]
            per_turn = (figures[longer] / longer) / (figures[shorter] / shorter)
            print(f"{name}: {shorter} -> {longer} turns: lookup x{growth:.1f} for x{longer / shorter:.0f} turns; "
                  f"per-turn cost ratio {per_turn:.2f} (linear ~1 or below, quadratic ~{longer / shorter:.0f})")
            if shorter >= 100 and per_turn > 3:
                status = 1
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1,100,1000", help="comma-separated chain lengths")
    parser.add_argument("--noise", type=int, default=2000, help="other responses in the table")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help='the PostgreSQL to compare with ("" for SQLite only)')
    args = parser.parse_args()
    sys.exit(asyncio.run(main([int(n) for n in args.lengths.split(",")], args.noise, args.pg_url)))
