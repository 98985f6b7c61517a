"""Several real ``kernel serve`` processes on one PostgreSQL schema (issue 17): replicas on
two ports with their own state directories (they share only the database URL), and one
``--workers 2`` server. Each test has its own fresh schema (``pg_url``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, ServedProcess, free_port, serve_process, write_cluster_config

from .conftest import check_events, parse_sse, wait_for

LONG_TEXT = " ".join(f"w{i}" for i in range(400))  # 400 words at 0.05 s: a 20 s run


def write_config(folder: Path, pg_url: str, *, lease: float = 30, workers: int = 1) -> Path:
    return write_cluster_config(
        folder, pg_url,
        '[agents.main]\nprovider = "t"\n'
        '[agents.slow]\nprovider = "slow"\n'
        '[agents.slowt]\nprovider = "slowt"\n'
        '[providers.t]\nkind = "echo"\nmode = "transcript"\n'
        '[providers.slow]\nkind = "echo"\ndelay_seconds = 0.05\n'
        '[providers.slowt]\nkind = "echo"\nmode = "transcript"\ndelay_seconds = 0.05\n'
        "[plugins.echo]\nenabled = true\n[plugins.openresponses]\nenabled = true\n",
        lease=lease, workers=workers)


@contextmanager
def replica(folder: Path, pg_url: str, **options: Any) -> Iterator[tuple[ServedProcess, httpx.Client]]:
    with serve_process(write_config(folder, pg_url, **options)) as served, httpx.Client(
            base_url=served.base, headers=AUTH_HEADERS, timeout=30) as client:
        yield served, client


def _text(body: dict[str, Any]) -> str:
    return "".join(part["text"] for item in body["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def _status(http: httpx.Client, response_id: str) -> str:
    return http.get(f"/v1/responses/{response_id}").json()["status"]


def test_a_response_made_on_one_replica_is_read_chained_followed_and_cancelled_on_another(tmp_path, pg_url):
    with replica(tmp_path / "a", pg_url) as (_, a), replica(tmp_path / "b", pg_url) as (_, b):
        # Read-after-write: B answers for the id the moment A's response.created is out.
        body = {"input": "first words", "stream": True, "model": "slow"}
        with a.stream("POST", "/v1/responses", json=body) as streamed:
            lines = streamed.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: "):])
            assert first["type"] == "response.created"
            rid = first["response"]["id"]
            seen = b.get(f"/v1/responses/{rid}")
            assert seen.status_code == 200 and seen.json()["status"] == "in_progress"
            assert_valid("ResponseResource", seen.json())
            items = b.get(f"/v1/responses/{rid}/input_items").json()
            assert items["data"][0]["content"][0]["text"] == "first words"
            list(lines)
        chained = b.post("/v1/responses", json={"input": "second", "previous_response_id": rid})
        assert chained.status_code == 200, chained.text
        assert "first words" in _text(chained.json()) and "second" in _text(chained.json())
        assert a.get(f"/v1/responses/{chained.json()['id']}").json()["status"] == "completed"

        # Live stream resumed on B while A runs it: every event after N, once, in order.
        on_a: list[bytes] = []
        started = threading.Event()
        holder: dict[str, str] = {}

        def stream_on_a() -> None:
            payload = {"input": " ".join(f"v{i}" for i in range(60)), "stream": True, "model": "slow",
                       "background": True}
            with a.stream("POST", "/v1/responses", json=payload) as resp:
                raw = b""
                for chunk in resp.iter_bytes():
                    raw += chunk
                    if not started.is_set() and b"response.created" in raw:
                        holder["id"] = json.loads(raw.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
                        started.set()
                on_a.append(raw)

        writer = threading.Thread(target=stream_on_a)
        writer.start()
        assert started.wait(15)
        follow_id = holder["id"]
        wait_for(lambda: len(b.get(f"/v1/responses/{follow_id}").json()["output"] or []) > 0, timeout=15)
        assert _status(b, follow_id) == "in_progress"
        began = time.monotonic()
        with b.stream("GET", f"/v1/responses/{follow_id}", params={"stream": "true", "starting_after": 3}) as resp:
            assert resp.status_code == 200
            followed = parse_sse(resp.read())
        assert time.monotonic() - began > 0.5  # it followed the run live (60 words at 0.05 s each)
        writer.join(30)
        on_a_events = parse_sse(on_a[0])
        assert on_a_events[-1]["type"] == "response.completed"
        # B followed live: the run was still going when B began (it ends well after).
        assert [e["sequence_number"] for e in followed] == [e["sequence_number"] for e in on_a_events][4:]
        assert followed == on_a_events[4:]
        check_events(on_a_events)

        # Chaining on B onto a run still going on A waits for it (chain_wait_seconds), as on A.
        running = a.post("/v1/responses", json={"input": "x " * 40, "model": "slow", "background": True}).json()
        onto = b.post("/v1/responses", json={"input": "after", "previous_response_id": running["id"]})
        assert onto.status_code == 200, onto.text
        assert _text(onto.json()).count("x") >= 80 and _status(a, running["id"]) == "completed"

        # Cancel on B of a background run on A: A's provider call stops, promptly.
        bg = a.post("/v1/responses", json={"input": LONG_TEXT, "model": "slow", "background": True}).json()
        wait_for(lambda: _status(b, bg["id"]) == "in_progress", timeout=15)
        refused = b.delete(f"/v1/responses/{bg['id']}")  # running on A: not deleted under it
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "response_in_progress"
        time.sleep(0.5)
        asked = time.monotonic()
        cancelled = b.post(f"/v1/responses/{bg['id']}/cancel")
        took = time.monotonic() - asked
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert took < 5, f"cancel across processes took {took:.2f} s"
        words = len(_text(a.get(f"/v1/responses/{bg['id']}").json()).split())
        assert 0 < words < 200
        time.sleep(1.0)  # nothing more is produced: the provider call stopped
        after = a.get(f"/v1/responses/{bg['id']}").json()
        assert after["status"] == "cancelled" and len(_text(after).split()) == words
        again = b.post(f"/v1/responses/{bg['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "response_not_cancellable"


def test_a_killed_replica_runs_fail_after_its_lease_while_the_survivor_runs_go_on(tmp_path, pg_url):
    lease = 3.0
    with replica(tmp_path / "b", pg_url, lease=lease) as (_, b):
        mine = b.post("/v1/responses", json={"input": LONG_TEXT, "model": "slow", "background": True}).json()
        with replica(tmp_path / "a", pg_url, lease=lease) as (served_a, a):
            theirs = a.post("/v1/responses", json={"input": LONG_TEXT, "model": "slow", "background": True}).json()
            wait_for(lambda: _status(b, theirs["id"]) == "in_progress", timeout=15)
            served_a.proc.send_signal(signal.SIGKILL)
            served_a.proc.wait(10)
            killed_at = time.monotonic()
        # Not at once: the dead process's lease has to run out first.
        assert _status(b, theirs["id"]) == "in_progress"
        wait_for(lambda: _status(b, theirs["id"]) == "failed", timeout=lease + 15)
        waited = time.monotonic() - killed_at
        assert waited >= lease / 3, waited
        failed = b.get(f"/v1/responses/{theirs['id']}").json()
        assert "stopped" in failed["error"]["message"]
        assert_valid("ResponseResource", failed)
        # A process starting now fails nothing of B's (B's lease is live).
        with replica(tmp_path / "a2", pg_url, lease=lease) as (_, a2):
            assert _status(a2, mine["id"]) == "in_progress"
        assert _status(b, mine["id"]) == "in_progress"
        b.post(f"/v1/responses/{mine['id']}/cancel")  # (it would finish too; no need to wait 20 s)
        assert _status(b, mine["id"]) == "cancelled"


def test_turns_on_one_session_key_at_two_replicas_take_turns(tmp_path, pg_url):
    with replica(tmp_path / "a", pg_url) as (_, a), replica(tmp_path / "b", pg_url) as (_, b):
        headers = {"x-session-key": "shared-session"}
        answers: dict[str, dict[str, Any]] = {}

        def turn(http: httpx.Client, name: str, text: str) -> None:
            answers[name] = http.post("/v1/responses", headers=headers,
                                      json={"input": text, "model": "slowt"}).json()

        first = threading.Thread(target=turn, args=(a, "a", "alpha " * 20))
        first.start()
        time.sleep(0.5)  # A's turn holds the session
        second = threading.Thread(target=turn, args=(b, "b", "beta"))
        second.start()
        first.join(60)
        second.join(60)
        # B's turn began only once A's had ended and was saved: the model saw all of it.
        seen_by_b = _text(answers["b"])
        assert "alpha" in seen_by_b and _text(answers["a"]) in seen_by_b
        assert seen_by_b.index("alpha") < seen_by_b.index("beta")
        assert "beta" not in _text(answers["a"])


def test_three_processes_racing_migrations_migrate_once(tmp_path, pg_url):
    configs = [write_config(tmp_path / name, pg_url) for name in ("a", "b", "c")]
    ports = [free_port() for _ in configs]
    with ExitStack() as stack:
        # serve_process waits for health: start all three first, then wait.
        threads = []
        served: list[ServedProcess] = []
        lock = threading.Lock()

        def start(config: Path, port: int) -> None:
            proc = stack.enter_context(serve_process(config, port))
            with lock:
                served.append(proc)

        for config, port in zip(configs, ports, strict=True):
            thread = threading.Thread(target=start, args=(config, port))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(90)
        assert len(served) == 3
        logs = [s.stderr.read_text() for s in served]
        assert sum("applied openresponses migration 1" in log for log in logs) == 1, logs
        assert sum("applied kernel migration 3" in log for log in logs) == 1
        with httpx.Client(headers=AUTH_HEADERS, timeout=30) as http:
            made = http.post(f"{served[0].base}/v1/responses", json={"input": "hi"}).json()
            for proc in served:
                assert http.get(f"{proc.base}/v1/responses/{made['id']}").json()["status"] == "completed"


def test_workers_2_serve_one_port_from_two_processes(tmp_path, pg_url):
    config = write_config(tmp_path / "w", pg_url, workers=2)
    with serve_process(config) as served, httpx.Client(base_url=served.base, headers=AUTH_HEADERS,
                                                       timeout=30) as http:
        workers = _children(served.proc.pid)
        wait_for(lambda: len(_children(served.proc.pid)) == 2, timeout=30)
        workers = _children(served.proc.pid)
        # A chain of turns, each on whichever worker accepts it.
        previous = None
        for n in range(8):
            body: dict[str, Any] = {"input": f"turn {n}"}
            if previous:
                body["previous_response_id"] = previous
            with httpx.Client(base_url=served.base, headers=AUTH_HEADERS, timeout=30) as fresh:  # new connection
                answer = fresh.post("/v1/responses", json=body)
            assert answer.status_code == 200, answer.text
            previous = answer.json()["id"]
        assert all(f"turn {n}" in _text(answer.json()) for n in range(8))
        assert http.get(f"/v1/responses/{previous}").json()["status"] == "completed"
        # Both workers accept: under concurrent load each one's CPU time grows.
        before = {pid: _cpu_ticks(pid) for pid in workers}

        def burst() -> None:
            for _ in range(15):
                with httpx.Client(base_url=served.base, headers=AUTH_HEADERS, timeout=30) as fresh:
                    assert fresh.post("/v1/responses", json={"input": "load " * 30}).status_code == 200

        loaders = [threading.Thread(target=burst) for _ in range(8)]
        for thread in loaders:
            thread.start()
        for thread in loaders:
            thread.join(120)
        grew = {pid: _cpu_ticks(pid) - before[pid] for pid in workers}
        assert all(ticks >= 3 for ticks in grew.values()), grew
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0
        for pid in workers:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), timeout=10)


def test_workers_on_sqlite_are_refused_with_a_clear_error(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "plugins.toml"
    config.write_text(f'[kernel]\nstate_dir = "state"\n[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
                      '[agents.main]\nprovider = "echo"\n[plugins.echo]\nenabled = true\n', encoding="utf-8")
    kernel = Path(sys.executable).parent / "kernel"
    done = subprocess.run([str(kernel), "serve", "--config", str(config), "--port", str(free_port()),
                           "--workers", "2"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "--workers 2 (or [kernel] workers) needs a PostgreSQL store" in done.stderr


def _children(pid: int) -> list[int]:
    """The worker processes of ``kernel serve --workers`` (not multiprocessing's helper)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(entry))
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
