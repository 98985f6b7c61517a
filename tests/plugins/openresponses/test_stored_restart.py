"""Stored responses survive a real ``kernel serve`` process being stopped, killed and started again."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, serve_process

from .conftest import check_events, parse_sse, wait_for


def write_config(tmp_path: Path, grace: float = 0.3) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\nshutdown_grace_seconds = {grace}\n'
        f'[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[agents.main]\nprovider = "t"\n'
        '[agents.slow]\nprovider = "slow"\n'
        '[providers.t]\nkind = "echo"\nmode = "transcript"\n'
        '[providers.slow]\nkind = "echo"\ndelay_seconds = 0.05\n'
        "[plugins.echo]\nenabled = true\n[plugins.openresponses]\nenabled = true\n",
        encoding="utf-8",
    )
    return path


@contextmanager
def serving(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    """``kernel serve`` on a free port; yields the process, a client for it and its log file."""
    with serve_process(config) as served, httpx.Client(base_url=served.base, headers=AUTH_HEADERS,
                                                       timeout=30) as client:
        yield served.proc, client, served.stderr


def logged_events(state: Path, response_id: str) -> int:
    """How many events of a response the server's database file holds (read beside the server, WAL)."""
    with sqlite3.connect(state / "kernel.sqlite3") as db:
        return db.execute("SELECT count(*) FROM or_events WHERE response_id = ?", (response_id,)).fetchone()[0]


def _text(body: dict) -> str:
    return body["output"][0]["content"][0]["text"]


def test_chains_and_records_survive_restarts_and_interrupted_runs_fail(tmp_path):
    config = write_config(tmp_path)
    long_text = " ".join(f"w{i}" for i in range(400))
    with serving(config) as (proc, http, _):
        first = http.post("/v1/responses", json={"input": "first"}).json()
        with http.stream("POST", "/v1/responses", json={"input": "second", "stream": True,
                                                        "previous_response_id": first["id"]}) as resp:
            second_events = parse_sse(resp.read())
        second = second_events[-1]["response"]
        running = http.post("/v1/responses", json={"model": "slow", "input": long_text, "background": True}).json()
        wait_for(lambda: logged_events(tmp_path / "state", running["id"]) > 5)
        proc.send_signal(signal.SIGKILL)  # a crash: no shutdown hook runs
        proc.wait(10)

    with serving(config) as (proc, http, log):
        # Nothing stored was lost.
        assert http.get(f"/v1/responses/{first['id']}").json() == first
        assert http.get(f"/v1/responses/{second['id']}").json() == second
        replay = parse_sse(http.get(f"/v1/responses/{second['id']}", params={"stream": "true"}).content)
        assert replay == second_events
        items = http.get(f"/v1/responses/{first['id']}/input_items").json()
        assert [i["content"][0]["text"] for i in items["data"]] == ["first"]
        # The chain goes on across the restart.
        third = http.post("/v1/responses", json={"input": "third", "previous_response_id": second["id"]}).json()
        assert _text(third).split("\n")[:2] == ["user: first", "assistant: user: first"]
        assert _text(third).endswith("user: second\nassistant: " + _text(second) + "\nuser: third")
        # The run the crash interrupted is failed, with what it had said kept; its stream replays and ends.
        interrupted = http.get(f"/v1/responses/{running['id']}").json()
        assert_valid("ResponseResource", interrupted)
        assert interrupted["status"] == "failed" and "stopped" in interrupted["error"]["message"]
        kept = _text(interrupted)
        assert kept and long_text.startswith(kept.rstrip()) and interrupted["output"][0]["status"] == "incomplete"
        events = parse_sse(http.get(f"/v1/responses/{running['id']}", params={"stream": "true"}).content)
        check_events(events)
        assert events[-2]["type"] == "error" and events[-1]["response"] == interrupted
        # A graceful stop cancels a background run that outlives the grace period: it is not left running.
        slow = http.post("/v1/responses", json={"model": "slow", "input": long_text, "background": True}).json()
        wait_for(lambda: http.get(f"/v1/responses/{slow['id']}").json()["status"] == "in_progress")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        text = log.read_text()
        assert "marked 1 stored response(s) failed: the process running them stopped" in text
        assert "Traceback" not in text and " ERROR " not in text

    with serving(config) as (_, http, _):
        stopped = http.get(f"/v1/responses/{slow['id']}").json()
        assert stopped["status"] == "cancelled" and stopped["incomplete_details"] == {"reason": "cancelled"}
        assert_valid("ResponseResource", stopped)
        again = http.post("/v1/responses", json={"input": "fourth", "previous_response_id": third["id"]})
        assert again.status_code == 200


def test_a_damaged_record_never_stops_a_restart_and_reads_as_failed(tmp_path):
    """Rows as older code could write them (nested beyond the decoder) or as a bad disk leaves them."""
    config = write_config(tmp_path)
    with serving(config) as (proc, client, log):
        ids = []
        for _ in range(3):
            created = client.post("/v1/responses", json={"model": "main", "input": "hi"})
            assert created.status_code == 200, created.text
            ids.append(created.json()["id"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    interrupted, finished, healthy = ids
    deep = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
    with sqlite3.connect(tmp_path / "state" / "kernel.sqlite3") as db:
        # Looks like a run that was in flight at the kill: the startup sweep decodes it.
        db.execute("UPDATE or_responses SET status = 'in_progress', resource = ? WHERE id = ?", (deep, interrupted))
        db.execute("UPDATE or_responses SET output_items = ? WHERE id = ?", ("{not json", finished))
    for _ in range(2):  # every restart, not only the first
        with serving(config) as (proc, client, log):
            for response_id in (interrupted, finished):
                got = client.get(f"/v1/responses/{response_id}")
                assert got.status_code == 200, got.text
                body = got.json()
                assert_valid("ResponseResource", body)
                assert body["status"] == "failed"
                assert "damaged" in body["error"]["message"]
            assert client.get(f"/v1/responses/{healthy}").json()["status"] == "completed"
            follow = client.post("/v1/responses", json={"model": "main", "input": "more",
                                                        "previous_response_id": healthy})
            assert follow.status_code == 200, follow.text
            # Its output column is unreadable: continuing would silently drop that history.
            refused = client.post("/v1/responses", json={"model": "main", "input": "more",
                                                         "previous_response_id": finished})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "previous_response_damaged"
            # The repaired interrupted run is an ordinary failed response: its input still chains.
            after_repair = client.post("/v1/responses", json={"model": "main", "input": "more",
                                                              "previous_response_id": interrupted})
            assert after_repair.status_code == 200, after_repair.text
            assert _text(after_repair.json()) == "user: hi\nuser: more"
        assert "Traceback" not in log.read_text()
        assert log.read_text().count(f"stored response {finished} is damaged") == 1
