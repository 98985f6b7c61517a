"""The Blueprint: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/<id>``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, g, request

from kernel import ApiError, Failed, Finished, RunError, RunEvent
from kernel.agents import MODEL_PREFIXES
from kernel.http import for_body, read_json
from kernel.media import MediaLoader
from kernel.sessions import requested_session_key
from kernel.streaming import sse_response
from plugins.chat_completions.encode import CANCELLED, ChunkEncoder, compact_dumps, completion_body, completion_id
from plugins.chat_completions.fields import opt
from plugins.chat_completions.request import parse_request
from plugins.chat_completions.settings import ChatCompletionsSettings

if TYPE_CHECKING:
    from kernel.runs import Run
    from kernel.runtime import Kernel

SURFACE = "chat"
OWNED_BY = "agentkernel"

log = logging.getLogger("plugins.chat_completions")


def blueprint(kernel: Kernel, settings: ChatCompletionsSettings) -> Blueprint:
    """Build the plugin's routes around one kernel."""
    bp = Blueprint("chat_completions", __name__)
    listed_at = int(time.time())

    @bp.post("/v1/chat/completions")
    async def create_chat_completion() -> Any:
        body = await read_json(settings.max_body_bytes)
        model = opt(body, "model", str)
        agent = kernel.agents.resolve(model, request.headers)
        # Every structural check, the session key's included, comes before any media is fetched.
        parsed = await for_body(lambda: parse_request(body, agent=agent.name))
        turn = parsed.turn
        turn.session_key = requested_session_key(request.headers, agent=agent.name, surface=SURFACE, user=turn.user)
        if turn.session_key is None:
            parsed.require_answered_calls()
        await parsed.load_media(MediaLoader(settings.media))
        if model and not _names_agent(kernel, model):
            # A plain model name (gpt-4o ...) reached the default agent: its provider may use it upstream.
            turn.model = model
        if agent.tools:
            # List the agent's server-side tools now: a client tool that clashes with one is a 400.
            await kernel.tools.prepare(turn, agent, lambda name: _tool_path(body, name))
        run = kernel.runs.start(turn, background=False, principal=g.principal,
                                timeout=settings.run_timeout_seconds)
        cid = completion_id(run.id)
        created = int(run.created_at)
        echoed = model or f"agent:{agent.name}"
        if not parsed.stream:
            result = await _wait(run)
            if result.status == "failed" and result.error is not None:
                raise run_error(result.error, run.id)
            if result.status == "cancelled":
                raise run_error(CANCELLED, run.id)
            payload = completion_body(cid=cid, created=created, model=echoed, result=result,
                                      expose_reasoning=settings.expose_reasoning)
            return Response(compact_dumps(payload), mimetype="application/json")

        batches = run.event_batches()
        first = await _first_event(run, batches)
        encoder = ChunkEncoder(cid=cid, created=created, model=echoed, include_usage=parsed.include_usage,
                               expose_reasoning=settings.expose_reasoning)
        return sse_response(_chunks(first, batches, encoder, run.id), on_disconnect=lambda: _disconnected(run))

    @bp.get("/v1/models")
    async def list_models() -> Any:
        data = [model_object(name, listed_at) for name in sorted(kernel.agents.agents)]
        return {"object": "list", "data": data}

    @bp.get("/v1/models/<path:model_id>")
    async def retrieve_model(model_id: str) -> Any:
        name = agent_name_of(model_id)
        if name not in kernel.agents:
            known = ", ".join(f"agent:{n}" for n in sorted(kernel.agents.agents)) or "(none)"
            raise ApiError(404, f"The model {model_id!r} does not exist; available models: {known}",
                           param="model", code="model_not_found")
        return model_object(name, listed_at)

    return bp


def model_object(agent: str, created: int) -> dict[str, Any]:
    """One agent in OpenAI's model shape."""
    return {"id": f"agent:{agent}", "object": "model", "created": created, "owned_by": OWNED_BY}


def agent_name_of(model_id: str) -> str:
    """``agent:main`` (or a legacy prefix, or the bare name) -> ``main``."""
    for prefix in MODEL_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix):]
    return model_id


def run_error(error: RunError, run_id: str) -> ApiError:
    """A run that failed before anything was streamed, as an HTTP error (logged: the client may not say)."""
    # A saturated provider (429) is routine; anything else is worth an operator's look.
    log.log(logging.INFO if error.status < 500 else logging.WARNING, "run %s failed (%d %s): %s",
            run_id, error.status, error.code, error.message)
    headers = None
    if error.status == 429:
        headers = {"Retry-After": error.retry_after_header()}
    return ApiError(error.status, error.message, type=error.type, param=error.param, code=error.code,
                    headers=headers)


def _names_agent(kernel: Kernel, model: str) -> bool:
    return model.startswith(MODEL_PREFIXES) or model in kernel.agents


def _disconnected(run: Run) -> None:
    """The client went away: its run goes with it (chat runs are never background runs)."""
    if not run.done:
        log.info("client disconnected; cancelled run %s", run.id)
    run.cancel()


async def _wait(run: Run) -> Any:
    try:
        return await run.wait()
    except asyncio.CancelledError:
        # Quart cancels the view when the client disconnects.
        _disconnected(run)
        raise


async def _first_event(run: Run, batches: AsyncIterator[list[RunEvent]]) -> list[RunEvent]:
    """Wait for the run's first events so an early failure can still be an HTTP status."""
    try:
        first = await anext(batches)
    except asyncio.CancelledError:
        _disconnected(run)
        await batches.aclose()  # type: ignore[attr-defined]
        raise
    head = first[0]
    if isinstance(head, Failed):
        raise run_error(head.error, run.id)
    if isinstance(head, Finished) and head.reason == "cancelled":
        raise run_error(CANCELLED, run.id)
    return first


async def _chunks(first: list[RunEvent], batches: AsyncIterator[list[RunEvent]], encoder: ChunkEncoder,
                  run_id: str) -> AsyncIterator[bytes]:
    """The SSE body: the chunks of the events available at each wake-up as one piece
    (each ``data:`` block still goes out as its own HTTP chunk; see kernel.connections)."""
    try:
        batch: list[RunEvent] | None = first
        while batch is not None:
            pieces = []
            for ev in batch:
                data = encoder.encode(ev)
                if data:
                    pieces.append(data)
                if encoder.done:
                    if isinstance(ev, Failed):
                        log.warning("run %s failed mid-stream (%s): %s", run_id, ev.error.code, ev.error.message)
                    break
            if pieces:
                yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
            if encoder.done:
                return
            batch = await anext(batches, None)
    finally:
        await batches.aclose()  # type: ignore[attr-defined]


def _tool_path(body: dict[str, Any], name: str) -> str:
    """The field naming function tool ``name`` (``tools[i].function.name``), for error messages."""
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            return f"tools[{i}].function.name"
    return "tools"
