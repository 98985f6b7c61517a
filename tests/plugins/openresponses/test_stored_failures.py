"""A database that fails while a response runs: the client is answered, nothing stays ``in_progress``."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading

import httpx

from kernel.app import get_kernel
from kernel.testing import AUTH_HEADERS
from plugins.openresponses import plugin, retrieval

from .conftest import parse_sse, wait_for
from .stored_support import Probe, error_of, stored_app


def test_a_failed_event_log_write_leaves_a_tombstone_that_says_why(make_app, live_server, state_sql, caplog):
    caplog.set_level(logging.ERROR, logger="plugins.openresponses")
    app = stored_app(make_app)
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        store = plugin._STORED[get_kernel(app)].store

        async def broken(logs):
            raise sqlite3.OperationalError("disk I/O error")

        store.append_events_many = broken
        resp = http.post("/v1/responses", json={"model": "words", "input": "still answered", "stream": True})
        events = parse_sse(resp.content)
        assert resp.status_code == 200 and events[-1]["type"] == "response.completed"
        rid = events[0]["response"]["id"]
        # Not left "in_progress" with a partial log: reads and chains say it was not kept, and why.
        error = error_of(http.get(f"/v1/responses/{rid}"), 404)
        assert "storing it failed" in error["message"] and "disk I/O error" in error["message"]
        chained = error_of(http.post("/v1/responses", json={"input": "x", "previous_response_id": rid}), 400)
        assert chained["code"] == "previous_response_not_stored" and "storing it failed" in chained["message"]
        [(status, stored)] = state_sql("SELECT status, stored FROM or_responses WHERE id = ?", (rid,))
        assert stored == 0 and status == "not_stored"  # a final status: retention will expire it
        assert f"response {rid}: could not be stored" in caplog.text
        del store.append_events_many  # the database recovers: later responses are kept again
        again = parse_sse(http.post("/v1/responses", json={"model": "words", "input": "kept", "stream": True}).content)
        assert http.get(f"/v1/responses/{again[0]['response']['id']}").json() == again[-1]["response"]


def test_a_finished_response_whose_last_write_lags_can_be_deleted(make_app, live_server, monkeypatch):
    monkeypatch.setattr(retrieval, "WRITE_WAIT_SECONDS", 0.2)
    app = stored_app(make_app)
    gate = threading.Event()
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        store = plugin._STORED[get_kernel(app)].store
        real_update = store.update

        async def slow_update(response_id, **fields):
            while not gate.is_set():  # noqa: ASYNC110  (set from the test's thread)
                await asyncio.sleep(0.01)
            return await real_update(response_id, **fields)

        store.update = slow_update
        try:
            probe = Probe(before=0, after=1)
            probe.release.set()
            body = {"model": "probe", "input": probe.key, "background": True}
            rid = http.post("/v1/responses", json=body).json()["id"]
            wait_for(lambda: http.get(f"/v1/responses/{rid}").json()["status"] == "completed")
            # Reads already say "completed" while the final write is held: a delete is not "in progress".
            deleted = http.delete(f"/v1/responses/{rid}")
            assert deleted.status_code == 200, deleted.text
            assert error_of(http.get(f"/v1/responses/{rid}"), 404)["code"] == "response_not_found"
        finally:
            gate.set()
        wait_for(lambda: not plugin._STORED[get_kernel(app)].live.all())
        assert error_of(http.get(f"/v1/responses/{rid}"), 404)["code"] == "response_not_found"
