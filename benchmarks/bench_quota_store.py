"""Benchmark: what counting per-key limits in a shared PostgreSQL store adds to a request,
next to the same limits in Redis.

1. The statements alone, one client, sequential (microseconds per call, median and p99):
   the request's round trip (``quota_store.count_request``: requests_per_minute and a
   concurrency slot claimed, one statement), a plain read of the key's row, the run's
   settle (a write the request does not wait for); then Redis on the same machine: ``INCR``
   (the cheapest possible round trip) and an ``EVAL`` of a token-bucket script (what a Redis
   limiter would run), over a minimal RESP client on asyncio streams (no client library).
2. One hot key under contention: ``--tasks`` concurrent callers of the round trip on one
   key (PostgreSQL serialises writers of one row), round trips per second.
3. End to end: a real server on PostgreSQL (Hypercorn on loopback in a thread of this
   process, echo chat, one client, sequential): a key without limits, one with
   requests_per_minute, one with requests_per_minute + max_concurrent_runs (huge limits:
   nothing refused), alternated in rounds; the difference of the median latencies is what
   a limited request pays (round trips, and the CPU of the writes in the server process).

Usage::

    .venv/bin/python benchmarks/bench_quota_store.py [--calls 2000] [--requests 400] [--tasks 16]
        [--pg-url postgresql://postgres@127.0.0.1:5432/test] [--redis 127.0.0.1:6379]

Makes a schema on the PostgreSQL server (dropped afterwards) and one Redis key (deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
BUCKET_LUA = """
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or ARGV[1])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[3])
local now = tonumber(ARGV[3])
if now > at then level = math.min(tonumber(ARGV[1]), level + (now - at) * tonumber(ARGV[2])) at = now end
local ok = 0
if level >= 1 then level = level - 1 ok = 1 end
redis.call('HSET', KEYS[1], 'level', level, 'at', at)
return ok
"""


def micros(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1e6:7.0f} us   p99 {p99 * 1e6:7.0f} us"


async def timed(calls: int, make: object) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        await make()  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


class Resp:
    """Just enough RESP (the Redis protocol) for one command at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, *args: str) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.writer.write(b"".join(parts))
        line = await self.reader.readline()
        if line.startswith(b"$") and not line.startswith(b"$-1"):
            await self.reader.readexactly(int(line[1:]) + 2)
        if line.startswith(b"-"):
            raise RuntimeError(line.decode().strip())
        return line


async def statements(pg_url: str, redis: str, calls: int, tasks: int) -> None:
    from kernel.store import migrate
    from kernel.store.postgres import PostgresStore
    from plugins.observability import quota_store
    from plugins.observability.ledger import SCHEMA

    store = PostgresStore(pg_url, pool_size=max(10, tasks + 2))
    await store.open()
    try:
        await migrate(store, [SCHEMA])
        await quota_store.ensure(store, "hot", "", 0)

        async def round_trip() -> None:
            slot = uuid.uuid4().hex
            await quota_store.count_request(store, "hot", time.time(), 10**9, 10**9, slot, "bench")

        for _ in range(200):  # warm: connections, prepared statements
            await round_trip()
        print("1. one statement at a time (loopback)")
        print(f"   PostgreSQL  request round trip (rpm + slot claim)  {micros(await timed(calls, round_trip))}")
        print(f"   PostgreSQL  read the key's row                    "
              f"{micros(await timed(calls, lambda: quota_store.read(store, 'hot')))}")
        print(f"   PostgreSQL  settle (not waited for)                "
              f"{micros(await timed(calls, lambda: quota_store.settle(store, 'hot', time.time(), slot='x')))}")
        host, port = redis.rsplit(":", 1)
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            print(f"   Redis at {redis}: not reachable ({exc})")
        else:
            client = Resp(reader, writer)
            key = f"bench-{uuid.uuid4().hex}"
            for _ in range(200):
                await client.call("INCR", key)
            print(f"   Redis       INCR                                  "
                  f"{micros(await timed(calls, lambda: client.call('INCR', key)))}")
            await client.call("DEL", key)

            async def bucket() -> None:
                await client.call("EVAL", BUCKET_LUA, "1", key, "1000000000", "16666666", str(time.time()))

            print(f"   Redis       EVAL token bucket                     {micros(await timed(calls, bucket))}")
            await client.call("DEL", key)
            writer.close()

        print(f"2. one hot key, {tasks} concurrent callers")
        done = 0
        deadline = time.perf_counter() + 3

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await round_trip()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*[caller() for _ in range(tasks)])
        print(f"   PostgreSQL  {done / (time.perf_counter() - started):7.0f} round trips/s on one key")
    finally:
        await store.close()


def end_to_end(pg_url: str, requests: int) -> None:
    import httpx

    from kernel.testing import build_app, serve_in_thread

    secrets = {"free": "free-key-secret-0001", "rpm": "rpm-key-secret-00001", "rpm+slots": "limited-key-secret-1"}
    with tempfile.TemporaryDirectory() as folder:
        config = {
            "kernel": {"state_dir": f"{folder}/state", "access_log": False, "store": {"url": pg_url},
                       "auth": {"token": "bench-token-0123456789", "keys": {
                           "rpm+slots": {"secret": secrets["rpm+slots"], "requests_per_minute": 10**9,
                                         "max_concurrent_runs": 10**6},
                           "rpm": {"secret": secrets["rpm"], "requests_per_minute": 10**9},
                           "free": {"secret": secrets["free"]}}}},
            "agents": {"main": {"provider": "echo"}},
            "plugins": {"echo": {"enabled": True}, "chat_completions": {"enabled": True},
                        "observability": {"enabled": True}},
        }
        app = build_app(config, Path(folder) / "plugins.toml")
        payload = {"model": "main", "messages": [{"role": "user", "content": "hello there"}]}
        times: dict[str, list[float]] = {name: [] for name in secrets}
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            for secret in secrets.values():  # warm every path
                for _ in range(50):
                    client.post("/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {secret}"})
            for _ in range(max(1, requests // 50)):
                for name, secret in secrets.items():
                    for _ in range(50):
                        started = time.perf_counter()
                        reply = client.post("/v1/chat/completions", json=payload,
                                            headers={"Authorization": f"Bearer {secret}"})
                        times[name].append(time.perf_counter() - started)
                        assert reply.status_code == 200, reply.text
    print(f"3. end to end, echo chat on PostgreSQL, one client ({len(times['free'])} requests each)")
    free = statistics.median(times["free"])
    for name, label in (("free", "no limits"), ("rpm", "requests_per_minute: 1 round trip"),
                        ("rpm+slots", "+ max_concurrent_runs: + the slot's release")):
        added = f"   added {(statistics.median(times[name]) - free) * 1e6:5.0f} us" if name != "free" else ""
        print(f"   key with {label:44} {micros(times[name])}{added}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()

    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(args.pg_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE SCHEMA {schema}"))
    url = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}search_path={schema}"
    try:
        asyncio.run(statements(url, args.redis, args.calls, args.tasks))
        end_to_end(url, args.requests)
    finally:
        asyncio.run(admin(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
