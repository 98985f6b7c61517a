"""The store's chaining, item lookup, tombstones, salvage and migration, on real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from kernel.store import SqliteStore
from plugins.openresponses.replay import salvage_output
from plugins.openresponses.storage import ResponseRecord, SqlResponseStore, StoredEvent


def record(rid: str, prev: str | None = None, owner: str = "default", **kw) -> ResponseRecord:
    return ResponseRecord(
        id=rid, owner=owner, status=kw.pop("status", "completed"), created_at=kw.pop("created_at", time.time()),
        previous_response_id=prev,
        resource={"id": rid}, input_items=[{"id": f"msg_{rid}_wire", "type": "message"}],
        model_input=[{"type": "message", "role": "user", "parts": [{"type": "text", "text": rid}], "id": f"in_{rid}",
                      "phase": None}],
        output_items=kw.pop("output_items", [{"id": f"out_{rid}", "type": "message",
                                              "content": [{"type": "output_text", "text": rid}]}]),
        **kw,
    )


async def test_history_walks_one_chain_oldest_first(responses):
    for rid, prev in (("a", None), ("b", "a"), ("c", "b"), ("x", "a")):
        assert await responses.create(record(rid, prev)) > 0
    links = await responses.history("c", "default")
    assert [link.id for link in links] == ["a", "b", "c"]
    assert [link.model_input[0]["id"] for link in links] == ["in_a", "in_b", "in_c"]
    assert await responses.history("c", "someone") == []
    await responses.delete("b", "default")
    assert [link.id for link in await responses.history("c", "default")] == ["c"]  # the chain ends at a gap


async def test_find_item_by_input_or_output_id_per_owner(responses):
    await responses.create(record("a"))
    await responses.create(record("b", status="in_progress", output_items=[]))
    assert (await responses.find_item("in_a", "default")).id == "a"
    assert (await responses.find_item("out_a", "default")).id == "a"
    assert await responses.find_item("out_a", "other") is None
    await responses.update("b", status="completed", resource={"id": "b"}, output_items=[{"id": "out_b"}])
    assert (await responses.find_item("out_b", "default")).id == "b"


async def test_discard_leaves_a_tombstone_with_its_reason(responses):
    await responses.create(record("a"))
    await responses.append_events("a", [StoredEvent(0, {"type": "response.created"})])
    await responses.discard("a", "too big")
    got = await responses.get("a", "default")
    assert got is not None and not got.stored and got.not_stored_reason == "too big" and got.resource == {}
    assert await responses.events_after("a", -1) == []
    assert await responses.input_items("a", "default", limit=10, order="asc", after=None) is None
    assert await responses.find_item("in_a", "default") is None
    (link,) = await responses.history("a", "default")
    assert not link.stored and link.not_stored_reason == "too big"


async def test_interrupted_runs_keep_what_their_log_said(responses):
    await responses.create(record("a", status="in_progress", output_items=[]))
    item = {"type": "message", "id": "m1", "status": "in_progress", "role": "assistant", "content": []}
    log = [
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": item},
        {"type": "response.content_part.added", "sequence_number": 3, "output_index": 0, "content_index": 0,
         "item_id": "m1", "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
        {"type": "response.output_text.delta", "sequence_number": 4, "output_index": 0, "content_index": 0,
         "item_id": "m1", "delta": "half "},
        {"type": "response.output_text.delta", "sequence_number": 5, "output_index": 0, "content_index": 0,
         "item_id": "m1", "delta": "done"},
    ]
    await responses.append_events("a", [StoredEvent(e["sequence_number"], e) for e in log])
    assert await responses.fail_interrupted("restarted", salvage_output) == 1
    got = await responses.get("a", "default")
    assert got.status == "failed" and got.resource["error"]["message"] == "restarted"
    assert got.output_items == got.resource["output"] == [
        {**item, "status": "incomplete",
         "content": [{"type": "output_text", "text": "half done", "annotations": [], "logprobs": []}]}]


async def test_a_database_from_before_model_input_is_migrated(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE or_responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, previous_response_id TEXT,
                      status TEXT NOT NULL, stored INTEGER NOT NULL, background INTEGER NOT NULL,
                      created_at REAL NOT NULL, updated_at REAL NOT NULL, resource TEXT NOT NULL,
                      output_items TEXT NOT NULL)""")
        db.execute("INSERT INTO or_responses VALUES ('old', 'default', NULL, 'completed', 1, 0, 1, 1, '{}', '[]')")
    store = SqliteStore(path)
    await store.open()
    try:
        rs = SqlResponseStore(store)
        await rs.open()
        await rs.open()  # idempotent
        assert (await rs.get("old", "default")).model_input == []
        await rs.create(record("new", "old"))
        assert [link.id for link in await rs.history("new", "default")] == ["old", "new"]
    finally:
        await store.close()


async def test_expiry_runs_in_batches_and_takes_tombstones_but_never_running_responses(responses):
    old = time.time() - 7200
    for i in range(7):
        await responses.create(record(f"done{i}", created_at=old))
    await responses.create(record("running", status="in_progress", created_at=old))
    # Tombstones are written while a response is still "running"; they must expire all the same.
    await responses.create(record("skipped", status="in_progress", stored=False, created_at=old))
    await responses.create(record("grown", status="in_progress", created_at=old))
    await responses.discard("grown", "too big")
    await responses.create(record("fresh"))
    await responses.append_events("done0", [StoredEvent(0, {"type": "response.created"})])
    assert await responses.expire(time.time() - 3600, batch=3) == 9
    assert await responses.get("running", "default") is not None
    assert await responses.get("fresh", "default") is not None
    for rid in ("done0", "done6", "skipped", "grown"):
        assert await responses.get(rid, "default") is None
    assert await responses.events_after("done0", -1) == []
    assert await responses.find_item("in_done0", "default") is None
    assert await responses.expire(time.time() - 3600, batch=3) == 0


async def test_input_item_finds_one_wire_item_of_a_response(responses):
    await responses.create(record("a"))
    assert await responses.input_item("a", "msg_a_wire") == {"id": "msg_a_wire", "type": "message"}
    assert await responses.input_item("a", "msg_nope") is None
