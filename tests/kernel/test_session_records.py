"""Sessions addressed by id (kernel.session_records) on a real SQLite file: records, item
pages with a stable cursor, ids and statuses, owners, expiry, and the column migration."""

from __future__ import annotations

import sqlite3
import time

import pytest

from kernel import Message, TextPart, ToolResult
from kernel.session_records import CursorNotFoundError, SessionRecords
from kernel.sessions import SessionStore
from kernel.store import SqliteStore


def user(text: str, item_id: str | None = None) -> Message:
    return Message(role="user", parts=[TextPart(text)], id=item_id)


@pytest.fixture
async def records(make_store):
    store = make_store()
    await store.open()
    sessions = SessionStore(store, api_key_names=frozenset({"alice"}))
    await sessions.open()
    yield SessionRecords(sessions)
    await store.close()


async def test_a_record_with_items_pages_both_ways_by_a_stable_cursor(records):
    record = await records.create(None, "conv_1", metadata={"a": "b"}, items=[user(f"m{i}") for i in range(5)])
    first = await records.page(None, record, limit=2, order="asc", after=None)
    assert [i.item.text for i in first.items] == ["m0", "m1"] and first.has_more
    # Items appended between pages do not move the cursor.
    await records.append(None, record, [user("m5")])
    rest = await records.page(None, record, limit=10, order="asc", after=first.items[-1].id)
    assert [i.item.text for i in rest.items] == ["m2", "m3", "m4", "m5"] and not rest.has_more
    newest = await records.page(None, record, limit=2, order="desc", after=None)
    assert [i.item.text for i in newest.items] == ["m5", "m4"]
    older = await records.page(None, record, limit=10, order="desc", after=newest.items[-1].id)
    assert [i.item.text for i in older.items] == ["m3", "m2", "m1", "m0"]
    with pytest.raises(CursorNotFoundError):
        await records.page(None, record, limit=2, order="asc", after="item_missing")


async def test_ids_are_kept_unique_per_session_and_statuses_stored_once(records):
    sessions = records.sessions
    ids = await sessions.append("k", [user("a", "msg_1"), user("b", "msg_1"), ToolResult(call_id="c", output="o")])
    assert ids[0] == "msg_1" and ids[1] != "msg_1" and ids[2].startswith("item_") and len(set(ids)) == 3
    sessions.note_status("msg_2", "incomplete")
    await sessions.append("k", [user("c", "msg_2")])
    await sessions.append("other", [user("d", "msg_2")])  # the note was used up by the first append
    record = await records.find(None, "k")
    assert record is not None and not record.registered
    found = await records.item(None, record, "msg_2")
    assert found is not None and found.status == "incomplete"
    other = await records.item(None, await records.find(None, "other"), "msg_2")
    assert other is not None and other.status is None


async def test_owners_see_only_their_own(records):
    mine = await records.create(None, "conv_x", metadata={}, items=[user("secret")])
    assert await records.find("alice", "conv_x") is None
    found = await records.find(None, "conv_x")
    assert found is not None and (found.id, found.key, found.owner) == (mine.id, mine.key, "default")
    # The same key names two different sessions for two owners.
    await records.sessions.append("shared", [user("mine")])
    await records.sessions.append("shared", [user("hers")], principal="alice")
    hers = await records.find("alice", "shared")
    page = await records.page("alice", hers, limit=10, order="asc", after=None)
    assert [i.item.text for i in page.items] == ["hers"]
    # Metadata on a key-only session registers it under its key; both owners may do so.
    await records.set_metadata(None, await records.find(None, "shared"), {"x": "1"})
    await records.set_metadata("alice", hers, {"x": "2"})
    assert (await records.find(None, "shared")).metadata == {"x": "1"}
    assert (await records.find("alice", "shared")).metadata == {"x": "2"}


async def test_expiry_deletes_idle_records_with_their_items_only(records):
    old = await records.create(None, "conv_old", metadata={}, items=[user("old")])
    fresh = await records.create(None, "conv_new", metadata={}, items=[user("new")])
    await records.sessions.append("by-key", [user("kept")])
    await records.store.execute("UPDATE session_meta SET updated_at = updated_at - 7200 WHERE id = 'conv_old'")
    assert await records.expire(time.time() - 3600) == 1
    assert await records.find(None, old.id) is None
    assert await records.find(None, fresh.id) is not None and await records.find(None, "by-key") is not None
    # An append counts as activity.
    await records.store.execute("UPDATE session_meta SET updated_at = updated_at - 7200 WHERE id = 'conv_new'")
    await records.append(None, fresh, [user("again")])
    assert await records.expire(time.time() - 3600) == 0


async def test_a_transcript_from_before_ids_gets_them_on_open(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE session_items (session_key TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL, "
                   "created_at REAL NOT NULL, PRIMARY KEY (session_key, seq))")
        db.execute("INSERT INTO session_items VALUES ('k', 0, ?, 1.0)",
                   ('{"type": "message", "role": "user", "parts": [{"type": "text", "text": "old"}], "id": null, '
                    '"phase": null}',))
    store = SqliteStore(path)
    await store.open()
    sessions = SessionStore(store)
    await sessions.open()
    await sessions.open()  # idempotent
    records = SessionRecords(sessions)
    record = await records.find(None, "k")
    page = await records.page(None, record, limit=5, order="asc", after=None)
    assert [i.item.text for i in page.items] == ["old"] and page.items[0].id.startswith("item_")
    assert [i.text for i in await sessions.load("k")] == ["old"]
    await store.close()
