"""Request handling behind the routes: body -> turn -> run -> response (JSON or SSE)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

from kernel import ApiError, Item, Message, RunError, TextPart, ToolCall, ToolChoice, ToolResult, Turn
from kernel.agents import MODEL_PREFIXES
from kernel.http import for_body, read_json
from kernel.media import MediaLoader
from kernel.sessions import requested_session_key
from kernel.streaming import sse_response
from plugins.openresponses import compact as c
from plugins.openresponses import resource as r
from plugins.openresponses.builder import ResponseBuilder
from plugins.openresponses.conversations import turns as conv_turns
from plugins.openresponses.conversations.service import ConversationsService
from plugins.openresponses.fields import IGNORED_FIELDS_HEADER
from plugins.openresponses.hosted import OMITTED_TOOLS_HEADER
from plugins.openresponses.item_views import model_view
from plugins.openresponses.items import Draft, resolve_items
from plugins.openresponses.request import ParsedRequest, build_turn, parse_compact_body, parse_create_body
from plugins.openresponses.server_tools import attach_server_tools, check_approval_ids
from plugins.openresponses.settings import OpenResponsesSettings
from plugins.openresponses.stored import StoredResponses
from plugins.openresponses.stream import EventFollower, drive, encode_json, sse_chunks

if TYPE_CHECKING:
    from kernel.runs import Run, RunResult
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.openresponses")

SURFACE = "responses"
# previous_response_id -> the model's view of that chain (raises ApiError when unknown).
PreviousLookup = Callable[[str], Awaitable[list[Item]]]


class ResponsesService:
    """Serves the plugin's endpoints for one kernel; ``stored`` is the stored-responses seam."""

    def __init__(self, kernel: Kernel, settings: OpenResponsesSettings,
                 stored: StoredResponses | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        self.stored = stored or StoredResponses()
        self.conversations = ConversationsService(kernel, settings, self.stored.find_item)

    # ------------------------------------------------------------------ POST /v1/responses

    async def create(self) -> Response:
        """Create a response: JSON once the run ends, or an SSE stream of its events."""
        body = await read_json(self.settings.max_body_bytes)
        parsed = await for_body(lambda: parse_create_body(body, self.settings.hosted_tools))
        if parsed.background and not self.stored.supports_background:
            raise ApiError(400, "background responses need a response store, and this server stores none; "
                           "send background: false", param="background", code="unsupported_parameter")
        if parsed.background and not parsed.params.store:
            raise ApiError(400, "background responses must be stored so they can be polled and cancelled; "
                           "send store: true (the default) or background: false", param="background",
                           code="invalid_value")
        principal = g.principal
        prepared = await self.prepare(parsed, request.headers, principal)
        headers = request_notes(parsed)
        background = parsed.background
        started = await self.launch(prepared, principal, record=True)
        builder, run = started.builder, started.run
        if started.follower is not None:
            # A background run outlives its stream: a client that leaves may resume with GET.
            response = sse_response(sse_chunks(started.follower, before_done=lambda: self.stored.settle(builder)),
                                    on_disconnect=None if background else run.cancel,
                                    keepalive=self.settings.keepalive_seconds)
            response.headers.update(headers)
            return response
        if background:
            # A background request is answered at once, with the response as created (queued).
            return _json(started.accepted or builder.resource(), 200, headers)
        await wait_or_cancel(run)
        if started.saved is not None:
            await started.saved
        if not builder.record_events:
            builder.feed_many(run.events_log)  # nobody watched: build the items in one pass
        await self.stored.settle(builder)
        status, extra = http_status(builder)
        return _json(builder.resource(), status, {**headers, **extra})

    # ------------------------------------------------------------------ the create path, per transport

    async def prepare(self, parsed: ParsedRequest, headers: Mapping[str, str], principal: str | None, *,
                      previous: PreviousLookup | None = None) -> Prepared:
        """Route, load the chain and the media, and build the turn: everything before a run starts.

        ``previous`` looks up ``previous_response_id`` (a WebSocket consults its
        connection's cache first); by default the store does.
        """
        model = parsed.params.model
        agent = self.kernel.agents.resolve(model, headers)
        session_key = requested_session_key(headers, agent=agent.name, surface=SURFACE, user=parsed.user)
        # ---- conversations: the turn runs on the conversation's session
        conversation = None
        if parsed.conversation is not None:
            if "x-session-key" in headers:
                raise ApiError(400, "send either 'conversation' or an x-session-key header, not both: each names "
                               "the session the turn continues", param="conversation", code="invalid_request")
            conversation = await conv_turns.resolve(self.conversations.records, principal, parsed.conversation)
            session_key = conversation.key
            parsed.params.conversation = conversation.id
        # ---- end conversations
        history: list[Item] = []
        previous_id = parsed.params.previous_response_id
        if previous_id is not None:
            history = await (previous or self._stored_previous(principal))(previous_id)
        items = await self._resolve(parsed.items, parsed.needs_resolution, principal)
        if session_key is None:
            # With a session the transcript (loaded when the run starts) may hold the call.
            check_tool_outputs(history, items, parsed.raw_input)
        turn = build_turn(parsed, items, agent=agent.name, history=history, session_key=session_key)
        if conversation is not None:
            # Every item the client sent joins the conversation (the kernel appends turn.input), named.
            turn.input, turn.history = [*turn.history, *turn.input], []
            conv_turns.name_input(turn.input)
        if parsed.server_tools:
            await attach_server_tools(self.kernel, parsed, turn)
        if session_key is None:
            # With a session the transcript (loaded when the run starts) may hold the request.
            check_approval_ids(turn, parsed.raw_input)
        if agent.tools or turn.toolsets:
            # List the server-side tools now: a client tool that clashes with one is a 400.
            paths = parsed.tool_paths
            await self.kernel.tools.prepare(turn, agent, lambda name: paths.get(name, "tools"))
        if model and not self._names_agent(model):
            # A plain model name (gpt-4o ...) reached the default agent: its provider may use it upstream.
            turn.model = model
        parsed.params.store = parsed.params.store and self.stored.persists
        parsed.params.settle(turn, model=model or f"agent:{agent.name}")
        chain = [*history, *model_view(items, parsed.system_messages)]
        return Prepared(parsed=parsed, turn=turn, items=items, chain=chain)

    async def launch(self, prepared: Prepared, principal: str | None, *, record: bool) -> Started:
        """Start the run and its builder; ``record=False`` keeps the response out of the store.

        The builder's events are what every transport encodes (SSE chunks, WebSocket
        messages); the store, when recording, is one more listener of the same events.
        """
        parsed = prepared.parsed
        background = parsed.background
        run = self.kernel.runs.start(prepared.turn, background=background, principal=principal,
                                     timeout=self.settings.run_timeout_seconds)
        saved: asyncio.Future[None] | None = None
        try:
            # A conversation turn's output items take the ids its transcript keeps (conversations/turns.py);
            # its builder follows the run live, so every id is known before the kernel saves the turn.
            names = conv_turns.output_namer(run, self.kernel.sessions) if parsed.conversation else None
            builder = ResponseBuilder(parsed.params, created_at=int(run.created_at),
                                      record_events=parsed.stream or names is not None, item_ids=names)
            if record:
                await self.stored.track(builder, run, parsed, prepared.items, principal)
            follower = EventFollower(builder) if parsed.stream else None
            builder.start(queued=background)
            accepted = builder.resource() if background and not parsed.stream else None
            if builder.record_events:
                # Live: a stream (or a store) follows events as they happen; drive() first
                # replays whatever the run already did, so nothing is missed.
                if names is not None:
                    # The turn's end reaches the response only once the kernel has saved its items.
                    saved = conv_turns.drive_after_save(builder, run)
                else:
                    drive(builder, run)
        except BaseException:
            run.cancel()  # nobody will ever read this run
            raise
        return Started(builder=builder, run=run, follower=follower, accepted=accepted, saved=saved)

    def _stored_previous(self, principal: str | None) -> PreviousLookup:
        async def lookup(response_id: str) -> list[Item]:
            return await self.stored.previous_items(response_id, principal)

        return lookup

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


@dataclass
class Prepared:
    """A create request ready to run: its turn, the client's items and the chain it extends."""

    parsed: ParsedRequest
    turn: Turn
    # The client's items as the model sees them (media loaded, references resolved).
    items: list[Item]
    # The model's view of everything before the output: the previous chain, then this input
    # (what a transport caching this response replays for the next turn).
    chain: list[Item]


@dataclass
class Started:
    """A launched response: the builder every transport encodes from, and its run."""

    builder: ResponseBuilder
    run: Run
    follower: EventFollower | None
    accepted: dict[str, Any] | None
    # A conversation turn: done once its items are saved and its builder has the terminal event.
    saved: asyncio.Future[None] | None = None


def request_notes(parsed: ParsedRequest) -> dict[str, str]:
    """Log what the request carries beyond the turn; the response headers that say so.

    Hosted tools left out of the model's view get one warning per request and the
    ``x-kernel-omitted-tools`` header, so an omission is never silent.
    """
    headers: dict[str, str] = {}
    omitted = parsed.parsed_tools.omitted
    if omitted:
        names = ",".join(omitted)
        log.warning("hosted tools not run by this gateway were left out of the model's view: %s", names)
        headers[OMITTED_TOOLS_HEADER] = names
    if parsed.ignored_fields:
        names = ",".join(parsed.ignored_fields)
        log.warning("request fields unknown to this gateway were ignored: %s", names)
        headers[IGNORED_FIELDS_HEADER] = names
    if parsed.client_metadata:
        log.info("client_metadata: %s", encode_json(parsed.client_metadata).decode())
    return headers


def check_tool_outputs(history: list[Item], items: list[Item], raw_input: Any) -> None:
    """Every ``function_call_output`` must answer a ``function_call`` earlier in its chain.

    The chain is the previous response's items, then this input; an answer to a call
    nobody made is the client's mistake (often a stale or evicted previous_response_id).
    """
    calls = {item.call_id for item in history if isinstance(item, ToolCall)}
    for item in items:
        if isinstance(item, ToolCall):
            calls.add(item.call_id)
        elif isinstance(item, ToolResult) and item.call_id not in calls:
            raise ApiError(400, f"function_call_output call_id {item.call_id!r} answers no function_call in this "
                           "input or in the chain it continues (previous_response_id); send the matching "
                           "function_call, or continue from the response that made it",
                           param=_call_id_param(raw_input, item.call_id), code="invalid_value")


def _call_id_param(raw_input: Any, call_id: str) -> str:
    if isinstance(raw_input, list):
        for index, raw in enumerate(raw_input):
            if isinstance(raw, dict) and raw.get("type") == "function_call_output" and raw.get("call_id") == call_id:
                return f"input[{index}].call_id"
    return "input"


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
