"""Benchmark: /v1/responses through the kernel vs. a bare Quart+Hypercorn endpoint.

Both servers run side by side in this one run, each in its own process on a loopback
port, and answer the same requests with the same wire shapes:

* non-streaming: requests/s of a complete ``ResponseResource`` JSON answer;
* streaming: SSE events/s of a full OpenResponses event stream (``response.created``,
  ``response.in_progress``, item and content-part events, one ``output_text.delta`` per
  word, the done events, ``response.completed``, ``data: [DONE]``).

The gateway path includes everything a real request pays for: bearer auth, agent
routing, body validation into a Turn, the run registry and its task, the echo
provider, the tool policy, the ResponseBuilder state machine and SSE keep-alive
plumbing. Requests send ``store: false``: the bare endpoint stores nothing, and a
stored response's SQLite write is storage cost, not gateway overhead. The bare
endpoint parses the JSON, splits the text into words the way the echo provider does,
and encodes the same resource and events by hand. The ratio kernel/bare is the
overhead figure; the target is >= 0.6. How the two are measured:
``benchmarks/sidebyside.py``.

Usage::

    .venv/bin/python benchmarks/bench_responses.py [--seconds 1] [--rounds 6] [--concurrency 8] [--words 64]

Runtime is bounded: about ``2 scenarios x 2 servers x rounds x seconds`` plus startup.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

from sidebyside import WORD, Scenario, SideBySide, run


def _resource(rid: str, created: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": created,
        "completed_at": created if status == "completed" else None, "status": status,
        "incomplete_details": None, "model": "agent:main", "previous_response_id": None, "instructions": None,
        "output": output, "error": None, "tools": [], "tool_choice": "auto", "truncation": "disabled",
        "parallel_tool_calls": True, "text": {"format": {"type": "text"}}, "top_p": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "top_logprobs": 0, "temperature": 1.0,
        "reasoning": {"effort": None, "summary": None}, "usage": usage, "max_output_tokens": None,
        "max_tool_calls": None, "store": False, "background": False, "service_tier": "default", "metadata": {},
        "safety_identifier": None, "prompt_cache_key": None,
    }


def bare_app() -> Any:
    """The same wire behaviour with nothing but Quart: the floor the kernel is measured against."""
    from quart import Quart, Response, request

    app = Quart("bare")

    def event(seq: int, kind: str, **fields: Any) -> bytes:
        body = json.dumps({"type": kind, "sequence_number": seq, **fields}, ensure_ascii=False,
                          separators=(",", ":"))
        return f"event: {kind}\ndata: {body}\n\n".encode()

    @app.get("/-/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.post("/v1/responses")
    async def responses() -> Any:
        body = json.loads(await request.get_data())
        words = WORD.findall(body["input"])
        text = "".join(words)
        rid, mid, created = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}", int(time.time())
        usage = {"input_tokens": len(words), "output_tokens": len(words), "total_tokens": 2 * len(words),
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}
        if not body.get("stream"):
            payload = _resource(rid, created, "completed", [item], usage)
            return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
                            mimetype="application/json")

        async def stream() -> Any:
            seq = 0

            def next_seq() -> int:
                nonlocal seq
                seq += 1
                return seq - 1

            at = {"item_id": mid, "output_index": 0, "content_index": 0}
            yield event(next_seq(), "response.created", response=_resource(rid, created, "in_progress", [], None))
            yield event(next_seq(), "response.in_progress", response=_resource(rid, created, "in_progress", [], None))
            yield event(next_seq(), "response.output_item.added", output_index=0,
                        item={**item, "status": "in_progress", "content": []})
            yield event(next_seq(), "response.content_part.added", **at, part={**part, "text": ""})
            for word in words:
                yield event(next_seq(), "response.output_text.delta", **at, delta=word, logprobs=[])
            yield event(next_seq(), "response.output_text.done", **at, text=text, logprobs=[])
            yield event(next_seq(), "response.content_part.done", **at, part=part)
            yield event(next_seq(), "response.output_item.done", output_index=0, item=item)
            yield event(next_seq(), "response.completed", response=_resource(rid, created, "completed", [item], usage))
            yield b"data: [DONE]\n\n"

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return app


def events_in(payload: bytes) -> int:
    return payload.count(b"\nevent: ") + payload.startswith(b"event: ")


def scenarios(text: str) -> list[Scenario]:
    request = {"model": "agent:main", "input": text, "store": False}
    return [
        Scenario("non-streaming", "requests/s", request),
        Scenario("streaming", "events/s", {**request, "stream": True}, units_in=events_in),
    ]


def check(body: dict[str, Any], payload: bytes, text: str) -> list[str]:
    """Verify one answer; returns the event types (empty for JSON)."""
    if body.get("stream"):
        blocks = [b for b in payload.decode().split("\n\n") if b]
        events = [json.loads(b.split("\n", 1)[1][6:]) for b in blocks if b.startswith("event: ")]
        final = events[-1]["response"]["output"][0]["content"][0]["text"]
        if final != text or blocks[-1] != "data: [DONE]":
            raise RuntimeError(f"unexpected stream {payload[:300]!r}")
        return [e["type"] for e in events]
    if json.loads(payload)["output"][0]["content"][0]["text"] != text:
        raise RuntimeError(f"unexpected answer {payload[:300]!r}")
    return []


RESPONSES = SideBySide(
    title="responses", path="/v1/responses", plugin="openresponses", bare_app=bare_app,
    scenarios=scenarios, check=check, words_help="words per answer (= text deltas per stream)",
)

if __name__ == "__main__":
    sys.exit(run(RESPONSES, __file__, __doc__.split("\n\n")[0]))
