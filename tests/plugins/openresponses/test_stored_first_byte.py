"""A streamed ``store: true`` response on SQLite starts before its record is committed,
and is readable and chainable from this process all the same. On PostgreSQL (processes
share the database, and the next request may reach another one) the first byte waits
for the record instead."""

from __future__ import annotations

import json
import threading
import time

import httpx

from kernel.testing import AUTH_HEADERS, serve_in_thread
from plugins.openresponses.storage import SqlResponseStore

from .stored_support import stored_app


def test_store_true_stream_starts_while_the_record_insert_is_held(make_app, monkeypatch):
    gate = threading.Event()
    holding = threading.Event()
    real_create_many = SqlResponseStore.create_many

    async def held_create_many(self, records):
        import asyncio

        holding.set()
        while not gate.is_set():  # noqa: ASYNC110 (set from the test's thread)
            await asyncio.sleep(0.01)
        return await real_create_many(self, records)

    monkeypatch.setattr(SqlResponseStore, "create_many", held_create_many)
    app = stored_app(make_app)
    if app.extensions["kernel"].store.shared:
        _first_byte_waits_for_the_record(app, gate, holding)
        return
    with serve_in_thread(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=10) as http:
        body = {"model": "words", "input": "one two three", "stream": True, "store": True}
        with http.stream("POST", "/v1/responses", json=body) as streamed:
            assert streamed.status_code == 200
            lines = streamed.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            created = json.loads(first[len("data: "):])
            assert created["type"] == "response.created"
            rid = created["response"]["id"]
            # The stream began while the insert is still held: the record is not committed.
            assert holding.wait(5) and not gate.is_set()
            live = http.get(f"/v1/responses/{rid}")
            assert live.status_code == 200, live.text
            assert live.json()["id"] == rid
            gate.set()
            rest = [line for line in lines if line.startswith("data: {")]
        assert json.loads(rest[-1][len("data: "):])["type"] == "response.completed"
        stored = http.get(f"/v1/responses/{rid}").json()
        assert stored["status"] == "completed"
        assert http.get(f"/v1/responses/{rid}/input_items").json()["data"][0]["content"][0]["text"] == "one two three"
        chained = http.post("/v1/responses", json={"model": "words", "input": "four", "previous_response_id": rid})
        assert chained.status_code == 200, chained.text


def _first_byte_waits_for_the_record(app, gate: threading.Event, holding: threading.Event) -> None:
    first_at: list[float] = []
    with serve_in_thread(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=10) as http:
        def read() -> None:
            body = {"model": "words", "input": "one two three", "stream": True, "store": True}
            with http.stream("POST", "/v1/responses", json=body) as streamed:
                for line in streamed.iter_lines():
                    if line.startswith("data: ") and not first_at:
                        first_at.append(time.monotonic())

        reader = threading.Thread(target=read)
        reader.start()
        assert holding.wait(5)
        time.sleep(0.5)
        assert not first_at  # nothing was sent while the record was not in the database
        released = time.monotonic()
        gate.set()
        reader.join(10)
        assert first_at and first_at[0] >= released
