"""Several real ``kernel serve`` processes on one PostgreSQL schema: per-key limits hold
across two replicas (their own ports and state directories, one database), a killed
replica's concurrency slot comes back when its lease expires, and ``--workers 2`` answers
``/metrics`` for both workers. Each test has its own fresh schema (``pg_url``)."""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from kernel.testing import AUTH_HEADERS, ServedProcess, serve_process, write_cluster_config

from .support import scrape, value, wait_until

SECRET = "limited-key-secret-1"
HEADERS = {"Authorization": f"Bearer {SECRET}"}
CHAT = "/v1/chat/completions"


def write_config(folder: Path, pg_url: str, *, limits: str = "", lease: float = 30, workers: int = 1) -> Path:
    return write_cluster_config(
        folder, pg_url,
        f'[kernel.auth.keys.acme]\nsecret = "{SECRET}"\n{limits}\n'
        '[agents.main]\nprovider = "echo"\n'
        '[agents.slow]\nprovider = "slow"\n'
        '[providers.slow]\nkind = "echo"\ndelay_seconds = 0.1\n'
        "[plugins.echo]\nenabled = true\n[plugins.chat_completions]\nenabled = true\n"
        "[plugins.observability]\nenabled = true\n",
        lease=lease, workers=workers, kernel_extra="access_log = false\n")


@contextmanager
def replicas(tmp_path: Path, pg_url: str, limits: str, **options: Any) -> Iterator[list[ServedProcess]]:
    """Two replicas (``a``, ``b``): separate processes, ports and state directories, one database."""
    with serve_process(write_config(tmp_path / "a", pg_url, limits=limits, **options)) as a, \
            serve_process(write_config(tmp_path / "b", pg_url, limits=limits, **options)) as b:
        yield [a, b]


def body(text: str = "hello there", model: str = "main", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def burst(bases: list[str], count: int, payload: dict[str, Any]) -> list[httpx.Response]:
    """``count`` requests at once, spread over ``bases`` in turn."""
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=HEADERS, timeout=60,
                                     limits=httpx.Limits(max_connections=count + 5)) as client:
            return await asyncio.gather(*[client.post(f"{bases[i % len(bases)]}{CHAT}", json=payload)
                                          for i in range(count)])
    return asyncio.run(run())


def test_requests_per_minute_is_one_budget_for_two_replicas(tmp_path, pg_url):
    with replicas(tmp_path, pg_url, "requests_per_minute = 3") as (a, b):
        answers = burst([a.base, b.base], 12, body())
        statuses = [r.status_code for r in answers]
        assert sorted(statuses).count(200) == 3 and statuses.count(429) == 9, statuses
        for refused in (r for r in answers if r.status_code == 429):
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["x-ratelimit-limit-requests"] == "3"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            assert 1 <= int(refused.headers["retry-after"]) <= 20  # one back every 20 s
        # One at a time too: each replica sees the other's count.
        assert httpx.post(f"{a.base}{CHAT}", headers=HEADERS, json=body()).status_code == 429
        assert httpx.post(f"{b.base}{CHAT}", headers=HEADERS, json=body()).status_code == 429
        # Keys without limits never touch the quota rows and are not limited.
        for base in (a.base, b.base):
            free = httpx.post(f"{base}{CHAT}", headers=AUTH_HEADERS, json=body())
            assert free.status_code == 200 and "x-ratelimit-limit-requests" not in free.headers


def test_max_concurrent_runs_holds_across_replicas(tmp_path, pg_url):
    with replicas(tmp_path, pg_url, "max_concurrent_runs = 2") as (a, b):
        words = " ".join(["w"] * 20)  # 2 s per run: the whole burst lands while the first two run
        answers = burst([a.base, b.base], 20, body(words, model="slow"))
        statuses = [r.status_code for r in answers]
        assert statuses.count(200) == 2 and statuses.count(429) == 18, statuses
        for refused in (r for r in answers if r.status_code == 429):
            assert "max_concurrent_runs = 2" in refused.json()["error"]["message"]
            assert refused.headers["retry-after"] == "1"
        # Both slots come back (written by whichever replica ran each run), on both replicas.
        for base in (a.base, b.base):
            wait_until(lambda base=base: httpx.post(f"{base}{CHAT}", headers=HEADERS, json=body()).status_code == 200,
                       timeout=10)
        # One run held on each replica: a third is refused on either; requests that start no
        # run hold no slot, so they still answer.
        with holding(a.base, words), holding(b.base, words):
            for base in (a.base, b.base):
                assert httpx.post(f"{base}{CHAT}", headers=HEADERS, json=body()).status_code == 429
                assert httpx.get(f"{base}/v1/models", headers=HEADERS).status_code == 200


@contextmanager
def holding(base: str, text: str) -> Iterator[None]:
    """A slow streamed run of the limited key, in progress for the block (then read to its end)."""
    started = threading.Event()

    def run() -> None:
        try:
            with httpx.stream("POST", f"{base}{CHAT}", headers=HEADERS, timeout=90,
                              json=body(text, model="slow", stream=True)) as streamed:
                assert streamed.status_code == 200
                for _ in streamed.iter_lines():
                    started.set()
        except httpx.HTTPError:
            pass  # the server was killed under it

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(20)
    try:
        yield
    finally:
        thread.join(60)


def test_a_budget_spent_on_one_replica_is_spent_on_the_other(tmp_path, pg_url):
    with replicas(tmp_path, pg_url, 'budget_tokens = 40\nbudget_period = "month"') as (a, b):
        spent = 0
        while True:
            answer = httpx.post(f"{a.base}{CHAT}", headers=HEADERS, json=body("a b c"))
            if answer.status_code != 200:
                break
            spent += answer.json()["usage"]["total_tokens"]
        assert answer.status_code == 429 and spent >= 40 - 4
        refused = httpx.post(f"{b.base}{CHAT}", headers=HEADERS, json=body("a b c"))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        assert f"used {spent}" in error["message"]  # every token spent on A, as B counts them
        # B's usage endpoint shows A's runs too (the ledger is shared; A writes it every second).
        def usage_on_b() -> int:
            rows = httpx.get(f"{b.base}/-/usage", headers=AUTH_HEADERS, params={"principal": "acme"}).json()["data"]
            return rows[0]["total_tokens"] if rows else 0

        wait_until(lambda: usage_on_b() == spent, timeout=10)


def test_a_killed_replica_gives_its_slot_back_when_its_lease_expires(tmp_path, pg_url):
    with replicas(tmp_path, pg_url, "max_concurrent_runs = 1", lease=2) as (a, b):
        held = holding(a.base, " ".join(["w"] * 600))  # a 60 s run on A
        held.__enter__()
        assert httpx.post(f"{b.base}{CHAT}", headers=HEADERS, json=body()).status_code == 429
        a.proc.kill()  # no shutdown: its slot stays taken in the database
        a.proc.wait(10)
        refused = httpx.post(f"{b.base}{CHAT}", headers=HEADERS, json=body())
        assert refused.status_code == 429  # A's lease (2 s) has not run out yet
        # B leads housekeeping once A's connection is gone, and frees A's slot when its lease expires.
        wait_until(lambda: httpx.post(f"{b.base}{CHAT}", headers=HEADERS, json=body()).status_code == 200,
                   timeout=20)
        assert _pg(pg_url, "SELECT count(*) FROM quota_slots") == [(0,)]
        assert "freed 1 concurrency slot(s) held by a process that stopped" in b.stderr.read_text()
        held.__exit__(None, None, None)


def worker_pids(parent: int) -> list[int]:
    """The worker processes of a ``kernel serve --workers N`` (not multiprocessing's resource tracker)."""
    children = [int(pid) for path in glob.glob(f"/proc/{parent}/task/*/children")
                for pid in Path(path).read_text().split()]
    return sorted(pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())


def _pg(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(pg_url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(run())


def test_metrics_of_two_workers_are_summed(tmp_path, pg_url):
    config = write_config(tmp_path / "w", pg_url)
    with serve_process(config, args=("--workers", "2")) as served:
        folder = config.parent / "state" / "metrics" / f"port-{served.base.rsplit(':', 1)[1]}"
        workers = worker_pids(served.proc.pid)
        assert len(workers) == 2
        sent = 0
        # Half the requests to each worker: the other one is stopped (SIGSTOP) meanwhile, so
        # only this one accepts connections.
        for stopped in workers:
            os.kill(stopped, signal.SIGSTOP)
            try:
                for i in range(20):
                    reply = httpx.post(f"{served.base}{CHAT}", headers=AUTH_HEADERS, json=body(f"request {i}"))
                    assert reply.status_code == 200
                    sent += 1
            finally:
                os.kill(stopped, signal.SIGCONT)

        def chat_requests() -> float:
            return value(scrape(served.base), "http_server_requests_total", route=CHAT, status="200")

        # Each worker writes its figures at least once a second; the one scraped, at the scrape.
        wait_until(lambda: chat_requests() == sent, timeout=10)
        samples = scrape(served.base)
        assert value(samples, "agentkernel_runs_started_total", agent="main") == sent
        assert value(samples, "agentkernel_runs_finished_total", agent="main", status="completed") == sent
        assert value(samples, "http_server_request_duration_seconds_count", route=CHAT) == sent
        assert value(samples, "agentkernel_runs_in_flight") == 0
        tokens = value(samples, "agentkernel_tokens_total", gen_ai_token_type="output")
        assert tokens >= sent
        # Each worker has its own counter file with its share.
        shares = []
        for path in glob.glob(os.path.join(folder, "counter_*.db")):
            share = sum(s.value for m in MultiProcessCollector.merge([path]) for s in m.samples
                        if s.name == "http_server_requests_total" and s.labels.get("route") == CHAT)
            shares.append(share)
        assert sorted(shares) == [20, 20], shares
