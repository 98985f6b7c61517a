"""POST /v1/responses/compact on a real server, and the compaction item sent back as input."""

from __future__ import annotations

from testsupport.spec import assert_valid

from plugins.openresponses.compact import SUMMARY_HEADING, decode_compaction

CONVERSATION = [
    {"role": "system", "content": "You plan trips."},
    {"role": "user", "content": "Plan a trip"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Where to?"}]},
    {"type": "function_call", "call_id": "c1", "name": "search", "arguments": "{\"q\":\"Rome\"}"},
    {"type": "function_call_output", "call_id": "c1", "output": "Rome: 3 hotels"},
    {"role": "user", "content": [{"type": "input_text", "text": "To Rome"}]},
]


def test_compact_keeps_messages_and_summarises_the_rest(server):
    resp = server.post({"model": "main", "input": CONVERSATION, "instructions": "Be thrifty."},
                       path="/v1/responses/compact")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_valid("CompactResource", body)
    assert body["object"] == "response.compaction" and body["id"].startswith("resp_")
    kept, compaction = body["output"][:-1], body["output"][-1]
    assert [(m["role"], m["content"][0]["text"]) for m in kept] == [
        ("system", "You plan trips."), ("user", "Plan a trip"), ("user", "To Rome")]
    assert compaction["type"] == "compaction" and compaction["id"].startswith("cmp_")
    summary = decode_compaction(compaction["encrypted_content"], "x")
    # The echo agent's "summary" is the transcript it was asked to summarise: everything is in it.
    for fragment in ("instructions: Be thrifty.", "assistant: Where to?", "search({\"q\":\"Rome\"})",
                     "tool result [call c1]: Rome: 3 hotels", "user: To Rome"):
        assert fragment in summary
    assert body["usage"]["output_tokens"] > 0
    run = server.runs_of("main")[-1]
    assert run.turn.session_key is None and run.turn.tools == [] and run.turn.tool_choice.mode == "none"

    # Sent back, the compaction item is the model's view of the earlier conversation, in place.
    follow = server.create({"model": "main", "input": [*kept[1:], compaction,
                                                        {"role": "user", "content": "And the budget?"}]})
    text = follow["output"][0]["content"][0]["text"]
    assert text.startswith("user: Plan a trip\nuser: To Rome\nsystem: " + SUMMARY_HEADING)
    assert text.endswith("user: And the budget?")
    assert "tool result [call c1]: Rome: 3 hotels" in text


def test_compact_requires_a_model_and_something_to_compact(server):
    missing = server.post({"input": CONVERSATION}, path="/v1/responses/compact")
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    empty = server.post({"model": "main", "input": []}, path="/v1/responses/compact")
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
    bad = server.post({"model": "main", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
                      path="/v1/responses/compact")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].content[0].image_url"


def test_compact_of_a_failing_agent_is_a_server_error(server):
    resp = server.post({"model": "broken", "input": CONVERSATION}, path="/v1/responses/compact")
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "provider_error"
