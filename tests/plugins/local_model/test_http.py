"""Over real HTTP (Hypercorn on loopback): a full model queue answers 429 with Retry-After,
and a client that disconnects frees the model for the next request.

A tiny test-only plugin route stands in for an endpoint plugin: it starts a run on the
`main` agent and streams its text as SSE, exactly the way endpoint plugins use the kernel.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Blueprint, g

from kernel import Limits, Message, TextDelta, TextPart, Turn, hookimpl
from kernel.http import read_json
from kernel.streaming import sse_response
from kernel.testing import AUTH_HEADERS

pytestmark = pytest.mark.slow

ENDLESS = {"type": "json_schema", "name": "story", "schema": {
    "type": "object", "properties": {"story": {"type": "string", "minLength": 1500}}, "required": ["story"]}}


class GenerateRoute:
    """POST /test/generate {"prompt", "max_tokens", "endless"} -> SSE of text deltas."""

    @hookimpl
    def register_routes(self, kernel: Any, settings: Any) -> list[Blueprint]:
        bp = Blueprint("local_model_test", __name__)

        @bp.post("/test/generate")
        async def generate() -> Any:
            body = await read_json(10_000)
            turn = Turn(agent="main", input=[Message("user", [TextPart(body["prompt"])])],
                        limits=Limits(max_output_tokens=body.get("max_tokens")),
                        response_format=ENDLESS if body.get("endless") else None)
            run = kernel.runs.start(turn, principal=g.principal)

            async def chunks() -> Any:
                async for ev in run.events():
                    if isinstance(ev, TextDelta):
                        yield f"data: {json.dumps(ev.text)}\n\n".encode()
                yield f"data: {json.dumps({'finish': run.finish_reason})}\n\n".encode()

            return sse_response(chunks(), on_disconnect=run.cancel)

        return [bp]


def test_full_queue_is_429_with_retry_after_and_disconnect_frees_the_model(
        make_app: Any, live_server: Any, tmp_path: Path) -> None:
    app = make_app({
        "plugins": {"local_model": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", "n_threads": 1, "max_queue": 0}},
        "agents": {"main": {"provider": "local"}},
    }, extra_plugins={"local_model_test": GenerateRoute()})
    provider = app.extensions["kernel"].providers["local"]
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        with client.stream("POST", "/test/generate", json={"prompt": "Tell a long story.", "max_tokens": 1000,
                                                           "endless": True}) as long:
            assert long.status_code == 200
            lines = long.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # generating now

            busy = client.post("/test/generate", json={"prompt": "Hi", "max_tokens": 2})
            assert busy.status_code == 429
            assert int(busy.headers["Retry-After"]) >= 1
            error = busy.json()["error"]
            assert error["code"] == "model_busy" and error["type"] == "rate_limit_error"
            assert "max_queue" in error["message"] and "[providers.local]" in error["message"]
        # Leaving the stream disconnects: the run is cancelled and the model freed.
        deadline = time.monotonic() + 15
        while provider.gate.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not provider.gate.busy
        ok = client.post("/test/generate", json={"prompt": "Say hi.", "max_tokens": 3})
        assert ok.status_code == 200
        events = [json.loads(line[5:]) for line in ok.text.splitlines() if line.startswith("data:")]
        assert events[-1]["finish"] in ("length", "stop")
        assert provider.last_stats is not None and provider.last_stats.output_tokens <= 3
