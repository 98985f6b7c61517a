"""The plugin's blueprint: ``GET /example/hello`` runs the agent, ``POST /example/echo`` reads JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from quart import Blueprint, g, jsonify, request

from kernel import ApiError, Message, Migration, Schema, TextDelta, TextPart, Turn
from kernel.http import read_json
from kernel.sessions import derive_session_key
from kernel.streaming import sse_response
from kernel_example_plugin.settings import ExampleSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel

SCHEMA = Schema("example", (
    Migration(1, "greeting counts", ("CREATE TABLE example_hits (name TEXT PRIMARY KEY, count INTEGER NOT NULL)",)),
))


def blueprint(kernel: Kernel, settings: ExampleSettings) -> Blueprint:
    """Build the blueprint; views close over the kernel and this plugin's settings."""
    bp = Blueprint("example", __name__, url_prefix="/example")

    @bp.get("/hello")
    async def hello() -> Any:
        name = request.args.get("name", "world")
        agent = kernel.agents.resolve(settings.agent, request.headers)
        session_key = None
        user = request.args.get("user")
        if user or "x-session-key" in request.headers:
            session_key = derive_session_key(request.headers, agent=agent.name, surface="example", user=user)
        turn = Turn(
            agent=agent.name,
            input=[Message(role="user", parts=[TextPart(f"{settings.greeting} {name}")])],
            session_key=session_key,
            user=user,
            surface="example",
        )
        run = kernel.runs.start(turn, principal=g.principal)
        result = await run.wait()
        if result.error is not None:
            raise ApiError(result.error.status, result.error.message, code=result.error.code)
        count = await _count_hit(kernel, name)
        return jsonify({
            "agent": agent.name,
            "run_id": run.id,
            "status": result.status,
            "text": result.text,
            "principal": g.principal,
            "session_key": session_key,
            "hits": count,
        })

    @bp.get("/stream")
    async def stream() -> Any:
        # SSE: one `data:` line per text delta, then the run's final status. A client
        # that leaves early cancels the run (on_disconnect).
        text = request.args.get("text", "")
        agent = kernel.agents.resolve(settings.agent, request.headers)
        turn = Turn(agent=agent.name, input=[Message(role="user", parts=[TextPart(text)])], surface="example")
        run = kernel.runs.start(turn, principal=g.principal)

        async def chunks() -> AsyncIterator[bytes]:
            async for ev in run.events():
                if isinstance(ev, TextDelta):
                    yield f"data: {json.dumps({'delta': ev.text})}\n\n".encode()
            yield f"data: {json.dumps({'done': run.status})}\n\n".encode()

        return sse_response(chunks(), on_disconnect=run.cancel, headers={"x-run-id": run.id})

    @bp.post("/echo")
    async def echo() -> Any:
        data = await read_json(settings.max_body_bytes)
        return jsonify({"received": data, "principal": g.principal})

    return bp


async def _count_hit(kernel: Kernel, name: str) -> int:
    """Count greetings per name in the kernel's store (shows a plugin owning a table)."""
    async with kernel.store.transaction() as db:
        await db.execute(
            "INSERT INTO example_hits (name, count) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET count = example_hits.count + 1",
            (name,),
        )
        row = await db.fetchone("SELECT count FROM example_hits WHERE name = ?", (name,))
    return int(row[0]) if row else 0
