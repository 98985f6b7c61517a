"""Request handling behind the routes: body -> turn -> run -> response (JSON or SSE)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

from kernel import ApiError, Item, Message, RunError, TextPart, ToolChoice, Turn
from kernel.agents import MODEL_PREFIXES
from kernel.http import read_json
from kernel.media import MediaLoader
from kernel.sessions import requested_session_key
from kernel.streaming import sse_response
from plugins.openresponses import compact as c
from plugins.openresponses import resource as r
from plugins.openresponses.builder import ResponseBuilder
from plugins.openresponses.items import Draft, resolve_items
from plugins.openresponses.request import build_turn, parse_compact_body, parse_create_body
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.stored import StoredResponses
from plugins.openresponses.stream import EventFollower, drive, encode_json, sse_chunks

if TYPE_CHECKING:
    from kernel.runs import Run, RunResult
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.openresponses")

SURFACE = "responses"


class ResponsesService:
    """Serves the plugin's endpoints for one kernel; ``stored`` is the stored-responses seam."""

    def __init__(self, kernel: Kernel, settings: OpenResponsesSettings,
                 stored: StoredResponses | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        self.stored = stored or StoredResponses()

    # ------------------------------------------------------------------ POST /v1/responses

    async def create(self) -> Response:
        """Create a response: JSON once the run ends, or an SSE stream of its events."""
        parsed = parse_create_body(await read_json(self.settings.max_body_bytes))
        model = parsed.params.model
        agent = self.kernel.agents.resolve(model, request.headers)
        principal = g.principal
        if parsed.background and not self.stored.supports_background:
            raise ApiError(400, "background responses need a response store, and this server stores none; "
                           "send background: false", param="background", code="unsupported_parameter")
        if parsed.background and not parsed.params.store:
            raise ApiError(400, "background responses must be stored so they can be polled and cancelled; "
                           "send store: true (the default) or background: false", param="background",
                           code="invalid_value")
        session_key = requested_session_key(request.headers, agent=agent.name, surface=SURFACE, user=parsed.user)
        history: list[Item] = []
        if parsed.params.previous_response_id is not None:
            history = await self.stored.previous_items(parsed.params.previous_response_id, principal)
        items = await self._resolve(parsed.items, parsed.needs_resolution, principal)
        turn = build_turn(parsed, items, agent=agent.name, history=history, session_key=session_key)
        if model and not self._names_agent(model):
            # A plain model name (gpt-4o ...) reached the default agent: its provider may use it upstream.
            turn.model = model
        background = parsed.background
        run = self.kernel.runs.start(turn, background=background, principal=principal,
                                     timeout=self.settings.run_timeout_seconds)
        try:
            params = parsed.params
            params.store = params.store and self.stored.persists
            params.settle(turn, model=model or f"agent:{agent.name}")
            builder = ResponseBuilder(params, created_at=int(run.created_at), record_events=parsed.stream)
            await self.stored.track(builder, run, parsed, items, principal)
            follower = EventFollower(builder) if parsed.stream else None
            builder.start(queued=background)
            # A background request is answered at once, with the response as created (queued).
            accepted = builder.resource() if background and not parsed.stream else None
            if builder.record_events:
                # Live: a stream (or a store) follows events as they happen; drive() first
                # replays whatever the run already did, so nothing is missed.
                drive(builder, run)
        except BaseException:
            run.cancel()  # nobody will ever read this run
            raise
        if follower is not None:
            # A background run outlives its stream: a client that leaves may resume with GET.
            return sse_response(sse_chunks(follower, before_done=lambda: self.stored.settle(builder)),
                                on_disconnect=None if background else run.cancel,
                                keepalive=self.settings.keepalive_seconds)
        if accepted is not None:
            return _json(accepted, 200, {})
        await wait_or_cancel(run)
        if not builder.record_events:
            builder.feed_many(run.events_log)  # nobody watched: build the items in one pass
        await self.stored.settle(builder)
        return _json(builder.resource(), *http_status(builder))

    # ------------------------------------------------------------------ POST /v1/responses/compact

    async def compact(self) -> Response:
        """Compact a conversation into its kept messages plus one ``compaction`` item."""
        parsed = parse_compact_body(await read_json(self.settings.max_body_bytes))
        agent = self.kernel.agents.resolve(parsed.model, request.headers)
        principal = g.principal
        history: list[Item] = []
        if parsed.previous_response_id is not None:
            history = await self.stored.previous_items(parsed.previous_response_id, principal)
        items = [*history, *await self._resolve(parsed.items, parsed.needs_resolution, principal)]
        if not items and not parsed.system and not parsed.instructions:
            raise ApiError(400, "nothing to compact: send the conversation as 'input' (or a previous_response_id)",
                           param="input", code="missing_required_parameter")
        lines = [f"instructions: {parsed.instructions}"] if parsed.instructions else []
        lines += [f"{role}: {text}" for role, text in parsed.system]
        transcript = "\n\n".join([*lines, c.render_transcript(items)]).strip()
        turn = Turn(agent=agent.name, input=[Message(role="user", parts=[TextPart(transcript)])],
                    system=c.COMPACT_INSTRUCTIONS, tool_choice=ToolChoice(mode="none"), surface=f"{SURFACE}.compact")
        if not self._names_agent(parsed.model):
            turn.model = parsed.model
        run = self.kernel.runs.start(turn, background=False, principal=principal,
                                     timeout=self.settings.run_timeout_seconds)
        result = await wait_or_cancel(run)
        if result.status == "failed" and result.error is not None:
            raise run_error(result.error)
        if result.status == "cancelled":
            raise ApiError(503, "the compaction run was cancelled (the server is shutting down)",
                           code="cancelled")
        output = [*c.kept_items(items, parsed.system), c.compaction_item(result.text)]
        body = c.compact_resource(response_id=r.new_id(r.RESPONSE_PREFIX), created_at=int(run.created_at),
                                  output=output, usage=r.usage_object(result.usage))
        return _json(body, 200, {})

    # ------------------------------------------------------------------ helpers

    async def _resolve(self, drafts: list[Draft], needed: bool, principal: str | None) -> list[Item]:
        if not needed:
            return drafts  # type: ignore[return-value]  # no draft parts: already plain items

        async def lookup(item_id: str) -> Item | None:
            return await self.stored.find_item(item_id, principal)

        return await resolve_items(drafts, MediaLoader(self.settings.media), lookup)

    def _names_agent(self, model: str) -> bool:
        return model.startswith(MODEL_PREFIXES) or model in self.kernel.agents


async def wait_or_cancel(run: Run) -> RunResult:
    """Wait for the run; if the request is cancelled (client gone), cancel the run with it."""
    try:
        return await run.wait()
    except asyncio.CancelledError:
        if run.cancel():
            log.info("client disconnected; cancelled run %s", run.id)
        raise


def http_status(builder: ResponseBuilder) -> tuple[int, dict[str, str]]:
    """The HTTP status for a finished non-streaming response (its body is always the resource)."""
    if builder.status == "failed" and builder.error is not None:
        return builder.error.status, _retry_after(builder.error)
    if builder.status == "cancelled":
        return 503, {}
    return 200, {}


def run_error(error: RunError) -> ApiError:
    """A failed run as an OpenAI-style error (used where no response object is defined)."""
    return ApiError(error.status, error.message, type=error.type, param=error.param, code=error.code,
                    headers=_retry_after(error))


def _retry_after(error: RunError) -> dict[str, str]:
    if error.status != 429:
        return {}
    return {"Retry-After": error.retry_after_header()}


def _json(body: dict[str, Any], status: int, headers: dict[str, str]) -> Response:
    return Response(encode_json(body), status=status, mimetype="application/json", headers=headers)
