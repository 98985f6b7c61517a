"""GET, DELETE and input_items of stored responses, per API key, with the openai SDK too."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.responses import Response as SdkResponse
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS

from .conftest import check_events, parse_sse
from .stored_support import OTHER_HEADERS, OTHER_SECRET, error_of, stored_app


def _get_stream(http: httpx.Client, rid: str, **params: str) -> list[dict]:
    with http.stream("GET", f"/v1/responses/{rid}", params={"stream": "true", **params}) as resp:
        raw = resp.read()
    assert resp.status_code == 200, raw
    assert resp.headers["content-type"].startswith("text/event-stream")
    return parse_sse(raw)


def test_get_returns_the_stored_resource(stored):
    created = stored.create({"model": "words", "input": "hello there", "metadata": {"k": "v"}})
    got = stored.http.get(f"/v1/responses/{created['id']}")
    assert got.status_code == 200
    assert_valid("ResponseResource", got.json())
    assert got.json() == created
    streamed = stored.stream({"model": "words", "input": "a b c"})
    final = streamed.terminal["response"]
    assert stored.http.get(f"/v1/responses/{final['id']}").json() == final


def test_get_stream_replays_the_persisted_event_log(stored):
    streamed = stored.stream({"model": "words", "input": "one two three"})
    rid = streamed.events[0]["response"]["id"]
    replay = _get_stream(stored.http, rid)
    assert replay == streamed.events
    tail = _get_stream(stored.http, rid, starting_after="4")
    assert tail == streamed.events[5:]


def test_get_stream_of_a_plain_json_response_is_rebuilt_from_it(stored):
    for body in ({"model": "words", "input": "x y"},
                 {"model": "main", "input": "q", "tools": [{"type": "function", "name": "f", "parameters": {}}],
                  "tool_choice": "required"}):
        created = stored.create(body)
        events = _get_stream(stored.http, created["id"])
        check_events(events)
        assert events[-1] == {"type": "response.completed", "sequence_number": len(events) - 1, "response": created}
        assert _get_stream(stored.http, created["id"], starting_after="2") == events[3:]


def test_delete_then_everything_is_404(stored):
    created = stored.create({"input": "bye"})
    rid = created["id"]
    deleted = stored.http.delete(f"/v1/responses/{rid}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": rid, "object": "response.deleted", "deleted": True}
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")):
        error = error_of(stored.http.request(method, f"/v1/responses/{rid}{path}"), 404)
        assert error["code"] == "response_not_found" and rid in error["message"]


def test_another_key_sees_nothing(stored):
    created = stored.create({"input": "private"})
    rid = created["id"]
    other = httpx.Client(base_url=stored.base, headers=OTHER_HEADERS, timeout=30)
    with other:
        for method, path in (("GET", ""), ("GET", "?stream=true"), ("DELETE", ""), ("GET", "/input_items"),
                             ("POST", "/cancel")):
            assert error_of(other.request(method, f"/v1/responses/{rid}{path}"), 404)["code"] == "response_not_found"
        # The other key's own responses are its own.
        theirs = other.post("/v1/responses", json={"input": "theirs"}).json()
        assert other.get(f"/v1/responses/{theirs['id']}").status_code == 200
        assert error_of(stored.http.get(f"/v1/responses/{theirs['id']}"), 404)["code"] == "response_not_found"
    assert stored.http.get(f"/v1/responses/{rid}").status_code == 200  # still there for its owner


def test_input_items_pages_in_both_orders(stored):
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    created = stored.create({"input": items})
    path = f"/v1/responses/{created['id']}/input_items"
    everything = stored.http.get(path, params={"order": "asc"}).json()
    assert everything["object"] == "list" and everything["has_more"] is False
    texts = [i["content"][0]["text"] for i in everything["data"]]
    assert texts == [f"m{i}" for i in range(5)]
    assert all(i["id"].startswith("msg_") and i["type"] == "message" and i["role"] == "user"
               for i in everything["data"])
    assert everything["first_id"] == everything["data"][0]["id"]
    assert everything["last_id"] == everything["data"][-1]["id"]
    page = stored.http.get(path, params={"limit": 2, "order": "asc"}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m0", "m1"] and page["has_more"] is True
    page = stored.http.get(path, params={"limit": 2, "order": "asc", "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m2", "m3"] and page["has_more"] is True
    page = stored.http.get(path, params={"limit": 2, "order": "asc", "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4"] and page["has_more"] is False
    for item in everything["data"]:
        assert_valid("ItemField", item)
    newest_first = stored.http.get(path).json()  # OpenAI's default order is desc
    assert [i["content"][0]["text"] for i in newest_first["data"]] == [f"m{i}" for i in reversed(range(5))]
    page = stored.http.get(path, params={"limit": 2}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4", "m3"] and page["has_more"] is True
    page = stored.http.get(path, params={"limit": 2, "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m2", "m1"] and page["has_more"] is True
    page = stored.http.get(path, params={"limit": 2, "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m0"] and page["has_more"] is False


def test_input_items_list_every_kind_and_references_as_the_items_they_name(stored):
    first = stored.create({"input": [{"type": "message", "id": "msg_listed_1", "role": "user", "content": "kept"}]})
    out_id = first["output"][0]["id"]
    image = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42"
             "YAAAAASUVORK5CYII=")
    body = {"model": "main", "input": [
        {"role": "system", "content": "be brief"},
        {"type": "item_reference", "id": "msg_listed_1"},
        {"type": "item_reference", "id": out_id},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"role": "user", "content": [{"type": "input_text", "text": "see"}, {"type": "input_image",
                                                                           "image_url": image}]},
    ]}
    created = stored.create(body)
    listed = stored.http.get(f"/v1/responses/{created['id']}/input_items", params={"order": "asc"}).json()
    for item in listed["data"]:
        assert_valid("ItemField", item)
    data = listed["data"]
    assert [i["type"] for i in data] == ["message", "message", "message", "function_call", "function_call_output",
                                         "message"]
    assert data[0]["role"] == "system"
    # A reference is listed as the item it named, with that item's id.
    assert data[1]["id"] == "msg_listed_1" and data[1]["content"] == [{"type": "input_text", "text": "kept"}]
    assert data[2] == first["output"][0]
    assert data[5]["content"][1] == {"type": "input_image", "image_url": image, "detail": "auto"}
    # The SDK reads every kind.
    page = stored.sdk.responses.input_items.list(created["id"], order="asc")
    assert [item.type for item in page.data] == [i["type"] for i in data]


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"order": "sideways"}, "order"),
])
def test_input_items_parameters_are_validated(stored, params, param):
    created = stored.create({"input": "x"})
    error = error_of(stored.http.get(f"/v1/responses/{created['id']}/input_items", params=params), 400)
    assert error["param"] == param and param in error["message"]


def test_retrieve_parameters_are_validated(stored):
    created = stored.create({"input": "x"})
    for params, param in (({"stream": "maybe"}, "stream"), ({"stream": "true", "starting_after": "-3"},
                                                              "starting_after"),
                          ({"starting_after": "2"}, "starting_after")):
        error = error_of(stored.http.get(f"/v1/responses/{created['id']}", params=params), 400)
        assert error["param"] == param


def test_a_response_over_the_size_cap_is_refused_or_not_kept(make_app, live_server):
    app = stored_app(make_app, max_stored_bytes=2000)
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        error = error_of(http.post("/v1/responses", json={"input": "x" * 3000}), 400)
        assert error["code"] == "response_too_large_to_store" and error["param"] == "input"
        assert "2000" in error["message"] and "store: false" in error["message"]
        assert http.post("/v1/responses", json={"input": "x" * 3000, "store": False}).status_code == 200
        # Small input, big answer: answered, then not kept; reads say why.
        words = " ".join(["word"] * 150)
        for body in ({"model": "words", "input": words}, {"model": "words", "input": words, "stream": True}):
            resp = http.post("/v1/responses", json=body)
            assert resp.status_code == 200
            rid = (parse_sse(resp.content)[0]["response"] if body.get("stream") else resp.json())["id"]
            error = error_of(http.get(f"/v1/responses/{rid}"), 404)
            assert "max_stored_bytes" in error["message"]
            error = error_of(http.post("/v1/responses", json={"input": "y", "previous_response_id": rid}), 400)
            assert "max_stored_bytes" in error["message"]


def test_sdk_retrieve_input_items_and_delete(stored):
    created = stored.sdk.responses.create(model="words", input=[{"role": "user", "content": "sdk hello"}])
    got = stored.sdk.responses.retrieve(created.id)
    assert isinstance(got, SdkResponse)
    assert got.id == created.id and got.output_text == "sdk hello" and got.status == "completed"
    page = stored.sdk.responses.input_items.list(created.id, limit=10, order="asc")
    assert [item.content[0].text for item in page.data] == ["sdk hello"]
    assert page.data[0].role == "user" and page.has_more is False
    with pytest.raises(openai.BadRequestError) as bad:
        stored.sdk.responses.input_items.list(created.id, limit=500)
    assert bad.value.body["param"] == "limit"
    other = openai.OpenAI(base_url=f"{stored.base}/v1", api_key=OTHER_SECRET, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)
    stored.sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        stored.sdk.responses.retrieve(created.id)
    other.close()


def test_sdk_retrieve_streams_and_resumes(stored):
    streamed = stored.stream({"model": "words", "input": "resume me please"})
    rid = streamed.events[0]["response"]["id"]
    with stored.sdk.responses.retrieve(rid, stream=True, starting_after=3) as events:
        got = [event.model_dump(mode="json", exclude_unset=True) for event in events]
    assert [e["sequence_number"] for e in got] == list(range(4, len(streamed.events)))
    assert got[-1]["type"] == "response.completed"
    assert got[-1]["response"]["id"] == rid


def test_routes_are_listed_with_the_plugin(stored):
    routes = {(r["methods"], r["path"]) for r in stored.kernel.plugins["openresponses"].routes}
    assert {("GET", "/v1/responses/<response_id>"), ("DELETE", "/v1/responses/<response_id>"),
            ("GET", "/v1/responses/<response_id>/input_items"),
            ("POST", "/v1/responses/<response_id>/cancel")} <= routes
    # Authentication is required like everywhere else.
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")):
        assert httpx.request(method, f"{stored.base}/v1/responses/resp_x{path}").status_code == 401
