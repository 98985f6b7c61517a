"""The SQLite response store on a real database file."""

from __future__ import annotations

import time

from plugins.openresponses.storage import ResponseRecord, SqlResponseStore, StoredEvent


def record(rid: str, prev: str | None = None, owner: str = "default", **kw) -> ResponseRecord:
    return ResponseRecord(
        id=rid, owner=owner, status=kw.pop("status", "completed"), created_at=kw.pop("created_at", time.time()),
        previous_response_id=prev, resource={"id": rid, "status": "completed"},
        input_items=kw.pop("input_items", [{"id": f"msg_{rid}_in", "type": "message", "role": "user",
                                            "content": f"hi {rid}"}]),
        output_items=[{"id": f"msg_{rid}_out", "type": "message", "role": "assistant"}], **kw,
    )


async def test_chain_returns_oldest_first_with_each_responses_own_items(responses):
    await responses.create(record("a"))
    await responses.create(record("b", "a"))
    await responses.create(record("c", "b"))
    chain = await responses.chain("c", "default")
    assert [r.id for r in chain] == ["a", "b", "c"]
    assert [r.input_items[0]["content"] for r in chain] == ["hi a", "hi b", "hi c"]
    assert chain[1].output_items[0]["id"] == "msg_b_out"


async def test_other_owner_sees_nothing(responses):
    await responses.create(record("a", owner="alice"))
    assert await responses.get("a", "bob") is None
    assert await responses.chain("a", "bob") == []
    assert await responses.delete("a", "bob") is False
    assert await responses.input_items("a", "bob", limit=10, order="asc", after=None) is None
    assert (await responses.get("a", "alice")) is not None


async def test_delete_removes_record_and_event_log(responses):
    await responses.create(record("a"))
    await responses.append_events("a", [StoredEvent(0, {"type": "response.created"}), StoredEvent(1, {"x": 1})])
    assert [e.sequence_number for e in await responses.events_after("a", 0)] == [1]
    assert await responses.delete("a", "default") is True
    assert await responses.get("a", "default") is None
    assert await responses.events_after("a", -1) == []
    assert await responses.delete("a", "default") is False


async def test_input_items_pagination_both_orders(responses):
    items = [{"id": f"msg_{i}", "type": "message", "role": "user", "content": str(i)} for i in range(5)]
    await responses.create(record("a", input_items=items))
    page = await responses.input_items("a", "default", limit=2, order="asc", after=None)
    assert [i["id"] for i in page.data] == ["msg_0", "msg_1"] and page.has_more
    page = await responses.input_items("a", "default", limit=2, order="asc", after="msg_3")
    assert [i["id"] for i in page.data] == ["msg_4"] and not page.has_more
    page = await responses.input_items("a", "default", limit=10, order="desc", after="msg_2")
    assert [i["id"] for i in page.data] == ["msg_1", "msg_0"]
    assert page.as_list()["first_id"] == "msg_1" and page.as_list()["last_id"] == "msg_0"


async def test_expire_deletes_old_finished_but_keeps_active(responses):
    old = time.time() - 3600
    await responses.create(record("old", created_at=old))
    await responses.create(record("running", created_at=old, status="in_progress"))
    await responses.create(record("new"))
    assert await responses.expire(time.time() - 60) == 1
    assert await responses.get("old", "default") is None
    assert await responses.get("running", "default") is not None
    assert await responses.get("new", "default") is not None


async def test_fail_interrupted_marks_active_runs_failed(responses):
    await responses.create(record("a", status="in_progress"))
    await responses.create(record("b", status="queued"))
    await responses.create(record("c"))
    assert await responses.fail_interrupted("the server restarted") == 2
    a = await responses.get("a", "default")
    assert a.status == "failed" and a.resource["status"] == "failed"
    assert a.resource["error"]["message"] == "the server restarted"
    assert (await responses.get("c", "default")).status == "completed"


async def test_tombstone_keeps_only_the_id(responses):
    await responses.create(record("t", stored=False))
    t = await responses.get("t", "default")
    assert t is not None and not t.stored and t.resource == {}
    assert await responses.input_items("t", "default", limit=10, order="asc", after=None) is None


async def test_survives_reopen(make_store):
    for step in ("write", "read"):
        store = make_store()
        await store.open()
        rs = SqlResponseStore(store)
        await rs.open()
        if step == "write":
            await rs.create(record("a"))
            await rs.create(record("b", "a"))
        else:
            assert [r.id for r in await rs.chain("b", "default")] == ["a", "b"]
        await store.close()
