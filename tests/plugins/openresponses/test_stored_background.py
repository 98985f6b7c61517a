"""Background runs: queued at once, polled, cancelled for real, and resumable streams."""

from __future__ import annotations

import json

import openai
import pytest
from testsupport.spec import assert_valid

from .conftest import check_events, parse_sse, wait_for
from .stored_support import Probe, error_of


def _status(stored, rid: str) -> str:
    body = stored.http.get(f"/v1/responses/{rid}").json()
    assert_valid("ResponseResource", body)
    return body["status"]


def test_background_answers_queued_and_runs_without_the_client(stored):
    probe = Probe()
    resp = stored.post({"model": "probe", "input": probe.key, "background": True})
    assert resp.status_code == 200
    queued = resp.json()
    assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
    wait_for(probe.started.is_set)
    assert _status(stored, queued["id"]) == "in_progress"
    probe.release.set()
    wait_for(lambda: _status(stored, queued["id"]) == "completed")
    final = stored.http.get(f"/v1/responses/{queued['id']}").json()
    assert final["output"][0]["content"][0]["text"] == "b0 b1 a0 a1 "
    assert final["usage"]["output_tokens"] == 4


def test_cancel_stops_the_provider_and_stores_cancelled(stored):
    probe = Probe()
    queued = stored.create({"model": "probe", "input": probe.key, "background": True})
    wait_for(probe.started.is_set)
    resp = stored.http.post(f"/v1/responses/{queued['id']}/cancel")
    assert resp.status_code == 200, resp.text
    cancelled = resp.json()
    assert_valid("ResponseResource", cancelled)
    assert cancelled["status"] == "cancelled" and cancelled["id"] == queued["id"]
    # The provider really stopped: cancellation reached its stream, which closed.
    assert probe.cancelled.is_set() and probe.closed.is_set()
    run = next(r for r in stored.runs_of("probe") if r.turn.input[-1].text == probe.key)
    assert run.status == "cancelled" and run.done
    assert stored.http.get(f"/v1/responses/{queued['id']}").json() == cancelled
    events = parse_sse(stored.http.get(f"/v1/responses/{queued['id']}", params={"stream": "true"}).content)
    check_events(events)
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "cancelled"
    # Cancelling again, or a finished response, is a 409 that says why.
    error = error_of(stored.http.post(f"/v1/responses/{queued['id']}/cancel"), 409)
    assert error["code"] == "response_not_cancellable" and "cancelled" in error["message"]


def test_cancel_of_a_queued_run_ends_it_before_the_provider_is_ever_called(stored):
    holder, waiting = Probe(), Probe()
    session = {"x-session-key": f"queue-{waiting.key}"}  # runs of one session key run one at a time
    first = stored.create({"model": "probe", "input": holder.key, "background": True}, headers=session)
    wait_for(holder.started.is_set)
    queued = stored.create({"model": "probe", "input": waiting.key, "background": True}, headers=session)
    assert _status(stored, queued["id"]) == "queued"
    resp = stored.http.post(f"/v1/responses/{queued['id']}/cancel")
    assert resp.status_code == 200, resp.text
    cancelled = resp.json()
    assert_valid("ResponseResource", cancelled)
    assert cancelled["status"] == "cancelled" and cancelled["output"] == []
    run = next(r for r in stored.runs_of("probe") if r.turn.input[-1].text == waiting.key)
    assert run.done and run.status == "cancelled"
    assert not waiting.started.is_set() and not waiting.closed.is_set()  # its provider never ran
    assert stored.http.get(f"/v1/responses/{queued['id']}").json() == cancelled
    events = parse_sse(stored.http.get(f"/v1/responses/{queued['id']}", params={"stream": "true"}).content)
    check_events(events)
    assert [e["type"] for e in events] == ["response.created", "response.queued", "response.in_progress",
                                           "response.incomplete"]
    # The run ahead of it was not disturbed.
    holder.release.set()
    wait_for(lambda: _status(stored, first["id"]) == "completed")
    assert not holder.cancelled.is_set()


def test_cancelling_a_finished_response_is_409(stored):
    done = stored.create({"input": "quick", "background": True})
    wait_for(lambda: _status(stored, done["id"]) == "completed")
    error = error_of(stored.http.post(f"/v1/responses/{done['id']}/cancel"), 409)
    assert error["code"] == "response_not_cancellable" and "'completed'" in error["message"]
    plain = stored.create({"input": "plain"})
    assert error_of(stored.http.post(f"/v1/responses/{plain['id']}/cancel"), 409)["param"] == "response_id"


def test_a_foreground_response_cannot_be_cancelled_or_deleted_while_it_runs(stored):
    probe = Probe()
    with stored.http.stream("POST", "/v1/responses", json={"model": "probe", "input": probe.key,
                                                            "stream": True}) as resp:
        lines = resp.iter_lines()
        rid = json.loads(next(line for line in lines if line.startswith("data: "))[6:])["response"]["id"]
        wait_for(probe.started.is_set)
        assert error_of(stored.http.post(f"/v1/responses/{rid}/cancel"), 400)["code"] == "response_not_background"
        assert error_of(stored.http.delete(f"/v1/responses/{rid}"), 409)["code"] == "response_in_progress"
        probe.release.set()
        for _ in lines:
            pass
    assert stored.http.delete(f"/v1/responses/{rid}").status_code == 200


def test_sdk_cancel(stored):
    probe = Probe()
    queued = stored.sdk.responses.create(model="probe", input=probe.key, background=True)
    assert queued.status == "queued"
    wait_for(probe.started.is_set)
    cancelled = stored.sdk.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and probe.cancelled.is_set()
    with pytest.raises(openai.ConflictError) as conflict:
        stored.sdk.responses.cancel(queued.id)
    assert conflict.value.body["code"] == "response_not_cancellable"


def test_a_background_stream_resumes_after_a_disconnect_without_loss_or_duplicates(stored):
    probe = Probe()
    seen: list[dict] = []
    with stored.http.stream("POST", "/v1/responses", json={"model": "probe", "input": probe.key, "stream": True,
                                                            "background": True}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "response.output_text.delta":
                    break  # the connection drops mid-run
    rid = seen[0]["response"]["id"]
    assert seen[1]["type"] == "response.queued"
    wait_for(probe.started.is_set)
    run = next(r for r in stored.runs_of("probe") if r.turn.input[-1].text == probe.key)
    assert not run.done  # a background run outlives its stream
    last = seen[-1]["sequence_number"]
    with stored.http.stream("GET", f"/v1/responses/{rid}",
                            params={"stream": "true", "starting_after": str(last)}) as resumed:
        raw = b""
        for chunk in resumed.iter_bytes():
            raw += chunk
            if b"\n\n" in raw:
                probe.release.set()  # the rest happens while the resumed stream follows it live
        rest = parse_sse(raw)
    assert rest[0]["sequence_number"] == last + 1
    events = seen + rest
    check_events(events)  # consecutive sequence numbers: nothing lost, nothing twice
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "b0 b1 a0 a1 "
    wait_for(lambda: _status(stored, rid) == "completed")
    # Once finished and stored, the log replays the same events.
    replay = parse_sse(stored.http.get(f"/v1/responses/{rid}", params={"stream": "true"}).content)
    assert replay == events
