"""previous_response_id on a real server: the model's view, tools, refusals, waiting, references."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

import httpx
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS

from .conftest import wait_for
from .stored_support import OTHER_HEADERS, Probe, error_of, stored_app

WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _text(body: dict) -> str:
    return body["output"][0]["content"][0]["text"]


def test_three_turns_chain_with_the_whole_history_in_order(stored):
    first = stored.create({"input": "one", "instructions": "Old rules."})
    assert first["store"] is True
    second = stored.create({"input": "two", "previous_response_id": first["id"], "instructions": "New rules."})
    assert second["previous_response_id"] == first["id"]
    assert _text(second) == "system: New rules.\nuser: one\nassistant: system: Old rules.\nuser: one\nuser: two"
    third = stored.create({"input": [{"role": "developer", "content": "Dev note."},
                                     {"role": "user", "content": "three"}],
                           "previous_response_id": second["id"]})
    # The chain back to its start, each response's input then output; old instructions are not carried.
    assert _text(third).split("\n") == [
        "system: Dev note.",
        "user: one",
        f"assistant: {_text(first)}".split("\n")[0], *_text(first).split("\n")[1:],
        "user: two",
        f"assistant: {_text(second)}".split("\n")[0], *_text(second).split("\n")[1:],
        "user: three",
    ]
    # A developer message is input: chained once more, it comes along as a system note.
    fourth = stored.create({"input": "four", "previous_response_id": third["id"]})
    assert "system: Dev note.\nuser: three\n" in _text(fourth)


def test_a_tool_call_continues_from_its_output(stored):
    call = stored.create({"input": "Paris", "tools": [WEATHER], "tool_choice": "required"})
    fc = call["output"][0]
    assert fc["type"] == "function_call"
    done = stored.create({"previous_response_id": call["id"], "tools": [WEATHER],
                          "input": [{"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}]})
    assert done["status"] == "completed"
    assert _text(done).split("\n") == [
        "user: Paris", f"tool_call get_weather({fc['arguments']}) [{fc['call_id']}]",
        f"tool_result [{fc['call_id']}]: sunny"]


def test_streamed_responses_chain_as_soon_as_they_end(stored):
    streamed = stored.stream({"input": "alpha"})
    rid = streamed.events[0]["response"]["id"]
    follow = stored.create({"input": "beta", "previous_response_id": rid})
    assert _text(follow) == "user: alpha\nassistant: user: alpha\nuser: beta"


def test_unknown_deleted_and_foreign_ids_are_404(stored):
    error = error_of(stored.post({"input": "x", "previous_response_id": "resp_nope"}), 404)
    assert error["code"] == "previous_response_not_found" and error["param"] == "previous_response_id"
    mine = stored.create({"input": "mine"})
    foreign = stored.http.post("/v1/responses", json={"input": "x", "previous_response_id": mine["id"]},
                               headers=OTHER_HEADERS)
    assert error_of(foreign, 404)["code"] == "previous_response_not_found"
    assert stored.http.delete(f"/v1/responses/{mine['id']}").status_code == 200
    error = error_of(stored.post({"input": "x", "previous_response_id": mine["id"]}), 404)
    assert error["code"] == "previous_response_not_found"


def test_store_false_responses_cannot_be_chained(stored):
    for body in ({"input": "x", "store": False}, {"input": "x", "store": False, "stream": True}):
        if body.get("stream"):
            rid = stored.stream(body).events[0]["response"]["id"]
        else:
            created = stored.create(body)
            assert created["store"] is False
            rid = created["id"]
        error = error_of(stored.post({"input": "y", "previous_response_id": rid}), 400)
        assert error["code"] == "previous_response_not_stored" and "store: false" in error["message"]
        assert "store: false" in error_of(stored.http.get(f"/v1/responses/{rid}"), 404)["message"]
        # Another key learns nothing about it: the plain not-found of any unknown id.
        foreign = stored.http.post("/v1/responses", json={"input": "y", "previous_response_id": rid},
                                   headers=OTHER_HEADERS)
        assert error_of(foreign, 404)["code"] == "previous_response_not_found"


def test_chaining_onto_a_running_response_waits_for_it(stored, caplog):
    caplog.set_level(logging.INFO, logger="plugins.openresponses")
    probe = Probe()
    with stored.http.stream("POST", "/v1/responses", json={"model": "probe", "input": probe.key,
                                                            "stream": True}) as resp:
        lines = resp.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        rid = created["response"]["id"]
        answer: dict = {}

        def chain() -> None:
            answer["resp"] = stored.post({"input": "next", "previous_response_id": rid})

        # Chained right after response.created, while the run is still going.
        thread = threading.Thread(target=chain)
        thread.start()
        wait_for(lambda: f"previous_response_id {rid} is still running; waiting" in caplog.text)
        assert thread.is_alive() and not answer  # held, not answered 404 or 409
        wait_for(probe.started.is_set)
        probe.release.set()
        thread.join(30)
        for _ in lines:
            pass
    follow = answer["resp"]
    assert follow.status_code == 200, follow.text
    assert _text(follow.json()) == f"user: {probe.key}\nassistant: b0 b1 a0 a1 \nuser: next"


def test_chaining_onto_a_running_response_is_409_without_a_wait(make_app, live_server):
    app = stored_app(make_app, chain_wait_seconds=0)
    probe = Probe()
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        queued = http.post("/v1/responses", json={"model": "probe", "input": probe.key, "background": True}).json()
        assert_valid("ResponseResource", queued)
        wait_for(probe.started.is_set)
        error = error_of(http.post("/v1/responses", json={"input": "x", "previous_response_id": queued["id"]}), 409)
        assert error["code"] == "previous_response_in_progress" and error["param"] == "previous_response_id"
        probe.release.set()
        wait_for(lambda: http.get(f"/v1/responses/{queued['id']}").json()["status"] == "completed")
        assert http.post("/v1/responses", json={"input": "x", "previous_response_id": queued["id"]}).status_code == 200


def test_item_references_find_stored_items_of_the_same_key_only(stored):
    first = stored.create({"input": [{"type": "message", "id": "msg_client_1", "role": "user", "content": "kept"}]})
    out_id = first["output"][0]["id"]
    body = {"input": [{"type": "item_reference", "id": "msg_client_1"}, {"type": "item_reference", "id": out_id},
                      {"role": "user", "content": "now"}]}
    again = stored.create(body)
    assert _text(again) == f"user: kept\nassistant: {_text(first)}\nuser: now"
    foreign = stored.http.post("/v1/responses", json=body, headers=OTHER_HEADERS)
    assert error_of(foreign, 404)["code"] == "item_not_found"


def test_each_response_stores_only_its_own_items_plus_a_link(stored):
    ids, prev = [], None
    for turn in range(4):
        body = {"model": "words", "input": f"turn {turn} " + "pad " * 50}
        if prev:
            body["previous_response_id"] = prev
        prev = stored.create(body)["id"]
        ids.append(prev)
    with sqlite3.connect(stored.kernel.store.path) as db:
        rows = {rid: db.execute("SELECT previous_response_id, model_input, output_items, length(resource) "
                                "FROM or_responses WHERE id = ?", (rid,)).fetchone() for rid in ids}
        listed = {rid: db.execute("SELECT count(*) FROM or_input_items WHERE response_id = ?", (rid,)).fetchone()[0]
                  for rid in ids}
    assert [rows[rid][0] for rid in ids] == [None, *ids[:-1]]  # the link to its predecessor
    for turn, rid in enumerate(ids):
        model_input, output = json.loads(rows[rid][1]), json.loads(rows[rid][2])
        assert listed[rid] == 1 and len(model_input) == 1 and len(output) == 1
        assert model_input[0]["parts"][0]["text"].startswith(f"turn {turn} ")
    # No copy of the history: the fourth response takes no more room than the second.
    assert rows[ids[3]][3] - rows[ids[1]][3] < 40
