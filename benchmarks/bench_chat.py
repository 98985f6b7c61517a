"""Benchmark: /v1/chat/completions through the kernel vs. a bare Quart+Hypercorn endpoint.

Both servers run side by side in this one run, each in its own process on a loopback
port, and answer the same requests with the same bytes on the wire:

* non-streaming: requests/s of a ``chat.completion`` JSON answer;
* streaming: ``data:`` chunks/s of a ``chat.completion.chunk`` SSE stream.

The gateway path includes everything a real request pays for: bearer auth, agent
routing, request parsing into a Turn, the run registry and its task, the echo
provider, the tool policy, chunk encoding and SSE keep-alive plumbing. The bare
endpoint parses the JSON, splits the text into words the same way the echo provider
does and encodes identical chunks by hand. The ratio kernel/bare is the overhead
figure; the target is >= 0.6. How the two are measured: ``benchmarks/sidebyside.py``.

Usage::

    .venv/bin/python benchmarks/bench_chat.py [--seconds 1] [--rounds 6] [--concurrency 8] [--words 64]

Runtime is bounded: about ``2 scenarios x 2 servers x rounds x seconds`` plus startup.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sidebyside import WORD, Scenario, SideBySide, run


def bare_app() -> Any:
    """The same wire behaviour with nothing but Quart: the floor the kernel is measured against."""
    from quart import Quart, Response, request

    app = Quart("bare")
    dumps = json.JSONEncoder().encode

    def chunk(cid: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": "agent:main",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    @app.get("/-/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def completions() -> Any:
        body = json.loads(await request.get_data())
        text = body["messages"][-1]["content"]
        words = WORD.findall(text)
        cid, created = "chatcmpl-" + os.urandom(16).hex(), int(time.time())
        if not body.get("stream"):
            payload = {
                "id": cid, "object": "chat.completion", "created": created, "model": "agent:main",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(words) + 1, "completion_tokens": len(words),
                          "total_tokens": 2 * len(words) + 1},
            }
            return Response(json.dumps(payload, separators=(",", ":")), mimetype="application/json")

        async def stream() -> Any:
            # The same templating trick the plugin uses, so the floor is as lean as it can be.
            head = (f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
                    '"model":"agent:main","choices":[{"index":0,"delta":')
            tail = ',"logprobs":null,"finish_reason":null}]}\n\n'
            yield (head + '{"role":"assistant","content":"","refusal":null}' + tail).encode()
            for word in words:
                yield (head + '{"content":' + dumps(word) + "}" + tail).encode()
            yield chunk(cid, created, {}, "stop")
            yield b"data: [DONE]\n\n"

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return app


def scenarios(text: str) -> list[Scenario]:
    message = {"model": "agent:main", "messages": [{"role": "user", "content": text}]}
    return [
        Scenario("non-streaming", "requests/s", message),
        Scenario("streaming", "chunks/s", {**message, "stream": True}, units_in=lambda p: p.count(b"data: ")),
    ]


def check(body: dict[str, Any], payload: bytes, text: str) -> int:
    """Verify one answer; returns the number of data: events (0 if JSON)."""
    if body.get("stream"):
        events = [e[6:] for e in payload.decode().split("\n\n") if e.startswith("data: ")]
        got = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        if got != text or events[-1] != "[DONE]":
            raise RuntimeError(f"unexpected stream {payload[:300]!r}")
        return len(events)
    if json.loads(payload)["choices"][0]["message"]["content"] != text:
        raise RuntimeError(f"unexpected answer {payload[:300]!r}")
    return 0


CHAT = SideBySide(
    title="chat completions", path="/v1/chat/completions", plugin="chat_completions", bare_app=bare_app,
    scenarios=scenarios, check=check, words_help="words per answer (= content chunks per stream)",
)

if __name__ == "__main__":
    sys.exit(run(CHAT, __file__, __doc__.split("\n\n")[0]))
