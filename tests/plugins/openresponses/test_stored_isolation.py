"""Another API key can neither see nor touch a response while it runs, nor reach its items."""

from __future__ import annotations

import httpx
from testsupport.spec import assert_valid

from .conftest import wait_for
from .stored_support import OTHER_HEADERS, Probe, error_of


def test_a_running_response_is_invisible_and_untouchable_for_another_key(stored):
    probe = Probe()
    secret_input = [{"type": "message", "id": "msg_isolation_secret", "role": "user", "content": probe.key}]
    queued = stored.create({"model": "probe", "input": secret_input, "background": True})
    rid = queued["id"]
    wait_for(probe.started.is_set)
    with httpx.Client(base_url=stored.base, headers=OTHER_HEADERS, timeout=30) as other:
        # Every route answers exactly as for a missing response, and nothing is waited for.
        for method, path in (("GET", ""), ("GET", "?stream=true"), ("GET", "?stream=true&starting_after=0"),
                             ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")):
            error = error_of(other.request(method, f"/v1/responses/{rid}{path}"), 404)
            assert error["code"] == "response_not_found" and error["param"] == "response_id"
        chained = other.post("/v1/responses", json={"input": "x", "previous_response_id": rid})
        assert error_of(chained, 404)["code"] == "previous_response_not_found"
        referenced = other.post("/v1/responses", json={"input": [
            {"type": "item_reference", "id": "msg_isolation_secret"}, {"role": "user", "content": "x"}]})
        assert error_of(referenced, 404)["code"] == "item_not_found"
    # None of that reached the run: it was neither cancelled nor deleted.
    assert not probe.cancelled.is_set()
    running = stored.http.get(f"/v1/responses/{rid}").json()
    assert_valid("ResponseResource", running)
    assert running["status"] == "in_progress"
    # Its owner can reference its input item while it runs, and its listing shows the item.
    mine = stored.create({"input": [{"type": "item_reference", "id": "msg_isolation_secret"},
                                    {"role": "user", "content": "mine"}]})
    assert mine["output"][0]["content"][0]["text"] == f"user: {probe.key}\nuser: mine"
    probe.release.set()
    wait_for(lambda: stored.http.get(f"/v1/responses/{rid}").json()["status"] == "completed")
    assert not probe.cancelled.is_set()
