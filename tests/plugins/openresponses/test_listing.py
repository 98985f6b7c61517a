"""``GET /-/responses`` and ``GET``/``DELETE /-/responses/{id}``: owner-scoped, admin sees all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS

ALICE = {"Authorization": "Bearer alice-secret-0123456789"}
BOB = {"Authorization": "Bearer bob-secret-0123456789"}
CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"alice": {"secret": "alice-secret-0123456789"},
                                 "bob": {"secret": "bob-secret-0123456789"}}}},
    "plugins": {"openresponses": {"enabled": True}},
    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.2}},
    "agents": {"main": {"provider": "echo"}, "other": {"provider": "echo"}, "slow": {"provider": "slow"}},
}


@pytest.fixture
def base(make_app: Callable[..., Any], live_server: Callable[..., Any]) -> Iterator[str]:
    with live_server(make_app(CONFIG)) as url:
        yield url


def create(base: str, headers: dict[str, str], text: str, model: str = "main", **extra: Any) -> dict[str, Any]:
    resp = httpx.post(f"{base}/v1/responses", headers=headers, json={"model": model, "input": text, **extra},
                      timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def listing(base: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = httpx.get(f"{base}/-/responses", headers=headers, params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_each_key_lists_only_its_own_newest_first_and_admin_lists_all(base: str) -> None:
    mine = [create(base, ALICE, f"alice {n}")["id"] for n in range(3)]
    theirs = create(base, BOB, "bob's secret words", model="other")["id"]
    alice = listing(base, ALICE)
    assert [r["id"] for r in alice["data"]] == mine[::-1]
    assert alice["has_more"] is False and alice["first_id"] == mine[2] and alice["last_id"] == mine[0]
    row = alice["data"][0]
    assert row["owner"] == "alice" and row["agent"] == "main" and row["status"] == "completed"
    assert row["output_text_preview"] == "alice 2" and row["usage"]["output_tokens"] == 2
    assert [r["id"] for r in listing(base, BOB)["data"]] == [theirs]
    admin = listing(base, AUTH_HEADERS)
    assert [r["id"] for r in admin["data"]] == [theirs, *mine[::-1]]
    # Another key's id is no cursor for alice: it answers as if it did not exist.
    refused = httpx.get(f"{base}/-/responses", headers=ALICE, params={"after": theirs})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "after"


def test_pages_follow_the_cursor_and_filters_apply(base: str) -> None:
    ids = [create(base, ALICE, f"n{n}", model="main" if n % 2 else "other")["id"] for n in range(5)]
    first = listing(base, ALICE, limit=2)
    assert [r["id"] for r in first["data"]] == [ids[4], ids[3]] and first["has_more"] is True
    second = listing(base, ALICE, limit=2, after=first["last_id"])
    assert [r["id"] for r in second["data"]] == [ids[2], ids[1]] and second["has_more"] is True
    third = listing(base, ALICE, limit=2, after=second["last_id"])
    assert [r["id"] for r in third["data"]] == [ids[0]] and third["has_more"] is False
    assert [r["id"] for r in listing(base, ALICE, agent="other")["data"]] == [ids[4], ids[2], ids[0]]
    assert listing(base, ALICE, status="failed")["data"] == []
    bad = httpx.get(f"{base}/-/responses", headers=ALICE, params={"status": "done"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    bad = httpx.get(f"{base}/-/responses", headers=ALICE, params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_detail_shows_items_events_and_timings_to_owner_and_admin_only(base: str) -> None:
    rid = create(base, ALICE, "hello there", stream=False)["id"]
    streamed = httpx.post(f"{base}/v1/responses", headers=ALICE, json={"model": "main", "input": "two words",
                                                                       "stream": True}, timeout=30)
    sid = next(line for line in streamed.text.splitlines() if '"response.created"' in line)
    sid = httpx.Response(200, content=sid.removeprefix("data: ")).json()["response"]["id"]
    for headers in (ALICE, AUTH_HEADERS):
        detail = httpx.get(f"{base}/-/responses/{sid}", headers=headers).json()
        assert detail["owner"] == "alice" and detail["agent"] == "main"
        assert_valid("ResponseResource", detail["response"])
        assert detail["input_items"][0]["content"][0]["text"] == "two words"
        types = [e["type"] for e in detail["events"]]
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert [e["sequence_number"] for e in detail["events"]] == list(range(len(types)))
        assert detail["timings"]["duration_seconds"] >= 0
    # A JSON (not streamed) response has no log: its events are rebuilt from the resource.
    replayed = httpx.get(f"{base}/-/responses/{rid}", headers=ALICE).json()["events"]
    assert replayed[-1]["type"] == "response.completed"
    hidden = httpx.get(f"{base}/-/responses/{sid}", headers=BOB)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "response_not_found"


def test_delete_by_owner_or_admin_never_by_another_key(base: str) -> None:
    first = create(base, ALICE, "one")["id"]
    second = create(base, ALICE, "two")["id"]
    assert httpx.delete(f"{base}/-/responses/{first}", headers=BOB).status_code == 404
    assert httpx.delete(f"{base}/-/responses/{first}", headers=ALICE).json()["deleted"] is True
    assert httpx.delete(f"{base}/-/responses/{second}", headers=AUTH_HEADERS).json()["deleted"] is True
    assert listing(base, ALICE)["data"] == []
    assert httpx.get(f"{base}/v1/responses/{first}", headers=ALICE).status_code == 404
    assert httpx.delete(f"{base}/-/responses/{first}", headers=ALICE).status_code == 404


def test_a_running_response_is_listed_and_cannot_be_deleted_until_it_ends(base: str) -> None:
    rid = create(base, ALICE, "one two three four five six", model="slow", background=True)["id"]
    row = listing(base, ALICE)["data"][0]
    assert row["id"] == rid and row["status"] in ("queued", "in_progress") and row["background"] is True
    detail = httpx.get(f"{base}/-/responses/{rid}", headers=ALICE).json()
    assert detail["response"]["status"] in ("queued", "in_progress")
    busy = httpx.delete(f"{base}/-/responses/{rid}", headers=ALICE)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "response_in_progress"
    assert httpx.post(f"{base}/v1/responses/{rid}/cancel", headers=ALICE).json()["status"] == "cancelled"
    assert httpx.delete(f"{base}/-/responses/{rid}", headers=ALICE).status_code == 200
