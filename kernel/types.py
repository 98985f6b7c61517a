"""The neutral run seam: turns in, run events out.

Endpoint plugins translate their wire format into a :class:`Turn`; provider plugins
turn a :class:`Turn` into a stream of :data:`RunEvent` values. Neither side knows the
other's protocol. Everything here is a plain dataclass so providers and endpoints can
build and inspect values cheaply; pydantic stays at the HTTP edges.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

# --------------------------------------------------------------------------- parts


@dataclass(slots=True)
class TextPart:
    """Plain text inside a message."""

    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image the user supplied.

    ``url`` is either a ``data:`` URL (already size- and type-checked by the endpoint)
    or an https URL that passed the kernel's fetch guard. Providers that cannot see
    images must render :meth:`placeholder` instead of failing.
    """

    url: str
    media_type: str | None = None
    detail: str = "auto"
    type: Literal["image"] = "image"

    def placeholder(self) -> str:
        """Text a provider without vision shows the model in place of the image."""
        kind = self.media_type or "image"
        return f"[image omitted: this model cannot see images ({kind})]"


@dataclass(slots=True)
class FilePart:
    """A file the user supplied, already reduced to its extracted text."""

    filename: str
    media_type: str
    text: str
    type: Literal["file"] = "file"

    def as_text(self) -> str:
        """The file as the model should read it, delimited from the prompt."""
        return f'<file name="{self.filename}" type="{self.media_type}">\n{self.text}\n</file>'


Part = TextPart | ImagePart | FilePart

# --------------------------------------------------------------------------- items

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    """One message. ``system`` messages inside history are session events (e.g. a
    webhook's wake text); the turn's main instructions live in :attr:`Turn.system`."""

    role: Role
    parts: list[Part]
    id: str | None = None
    phase: str | None = None
    type: Literal["message"] = "message"

    @property
    def text(self) -> str:
        """The text parts joined; files are included in their delimited form."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, TextPart):
                out.append(part.text)
            elif isinstance(part, FilePart):
                out.append(part.as_text())
        return "".join(out)


# "function": JSON arguments. "custom": a freeform tool (OpenAI's custom tools) whose call
# carries one raw input string in ``arguments`` instead of a JSON object.
ToolKind = Literal["function", "custom"]


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made; ``arguments`` is a JSON string (a custom tool's raw input)."""

    call_id: str
    name: str
    arguments: str
    id: str | None = None
    # The server-side tool set that ran this call (its label); None for a client tool call.
    server: str | None = None
    type: Literal["tool_call"] = "tool_call"
    tool_kind: ToolKind = "function"


@dataclass(slots=True)
class ToolResult:
    """The client's answer to a :class:`ToolCall`."""

    call_id: str
    output: str
    type: Literal["tool_result"] = "tool_result"


@dataclass(slots=True)
class Reasoning:
    """Model reasoning, carried through so a follow-up turn can send it back."""

    text: str = ""
    summary: list[str] = field(default_factory=list)
    encrypted_content: str | None = None
    id: str | None = None
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class ToolListing:
    """The tools a server-side tool set offered, kept in a conversation so a later turn
    reuses them instead of listing again. The agent loop owns it: providers never see it."""

    server: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    id: str | None = None
    type: Literal["tool_listing"] = "tool_listing"


@dataclass(slots=True)
class ApprovalRequest:
    """A server-side tool call waiting for the client's approval (agent loop only)."""

    id: str
    server: str
    name: str
    arguments: str
    type: Literal["approval_request"] = "approval_request"


@dataclass(slots=True)
class ApprovalResponse:
    """The client's answer to an :class:`ApprovalRequest` (agent loop only)."""

    approval_request_id: str
    approve: bool
    reason: str | None = None
    id: str | None = None
    type: Literal["approval_response"] = "approval_response"


Item = Message | ToolCall | ToolResult | Reasoning | ToolListing | ApprovalRequest | ApprovalResponse
# Items the kernel's agent loop consumes; they are removed before a provider sees a turn.
LOOP_ITEM_TYPES = (ToolListing, ApprovalRequest, ApprovalResponse)

# --------------------------------------------------------------------------- tools


@dataclass(slots=True)
class ToolSpec:
    """A client-side tool the model may call.

    A ``custom`` tool takes one freeform string instead of JSON arguments; ``format``
    constrains it: ``{"type": "text"}`` or ``{"type": "grammar", "syntax": "lark" | "regex",
    "definition": str}``. Providers that cannot constrain input describe the format to
    the model instead; ``parameters`` is unused for custom tools.
    """

    name: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    description: str | None = None
    strict: bool | None = None
    tool_kind: ToolKind = "function"
    format: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolChoice:
    """How tools may be used, enforced by the kernel (not merely hinted).

    * ``mode``: ``none`` offers no tools, ``auto`` lets the model decide, ``required``
      forces at least one call.
    * ``function``: a named function the model must call (implies ``required``).
    * ``allowed``: a hard allow-list; calls outside it are suppressed.
    """

    mode: Literal["none", "auto", "required"] = "auto"
    function: str | None = None
    allowed: list[str] | None = None

    @property
    def forced(self) -> bool:
        """True when the model must call a tool."""
        return self.mode == "required" or self.function is not None

    def permits(self, name: str) -> bool:
        """Whether a call to ``name`` may be returned to the client."""
        if self.mode == "none":
            return False
        if self.function is not None:
            return name == self.function
        return self.allowed is None or name in self.allowed


@dataclass(slots=True)
class Limits:
    """Sampling and length limits; ``None`` means the provider's default.

    Endpoints validate ranges before building a turn, so providers may forward
    values as they are:

    * ``presence_penalty`` / ``frequency_penalty``: -2.0 to 2.0, OpenAI's meaning
      (penalise tokens that appeared at all / in proportion to how often).
    * ``verbosity``: the answer length asked for ("low", "medium", "high").
    * ``reasoning_effort``: how hard a reasoning model should think, one of the
      effort names the endpoint's protocol allows ("none", "low", "medium", "high",
      ...). A provider without a reasoning knob ignores it.
    """

    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    max_tool_calls: int | None = None
    parallel_tool_calls: bool = True
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning_effort: str | None = None
    # "low" | "medium" | "high": how long an answer the client wants; a provider passes it
    # on (an upstream's ``verbosity``) or states it in the system text.
    verbosity: str | None = None
    # Request options with no neutral meaning that an OpenAI-compatible upstream can
    # forward as they are (service_tier, prompt_cache_key, prompt_cache_retention,
    # safety_identifier, truncation); other providers ignore them.
    hints: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- turn


@dataclass(slots=True)
class Turn:
    """One agent run's input, independent of any wire protocol.

    ``history`` is what came before (session transcript first, then earlier items
    the client sent); ``input`` is the current input: the newest user or tool items.
    The kernel prepends the session transcript to ``history`` before the provider
    sees the turn.
    """

    agent: str
    input: list[Item]
    history: list[Item] = field(default_factory=list)
    system: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    limits: Limits = field(default_factory=Limits)
    # {"type": "json_schema", "name": str, "schema": dict, "strict": bool} or
    # {"type": "json_object"}; None for free text.
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    session_key: str | None = None
    user: str | None = None
    # Provider-side model override (e.g. the upstream model name); None uses the agent's.
    model: str | None = None
    # Which endpoint created the turn ("responses", "chat", "hooks"); for logs only.
    surface: str = ""
    # Server-side tool sets this request brought (kernel.tools.ToolSet, e.g. a request's
    # MCP servers); run by the kernel's agent loop beside the agent's configured ones.
    toolsets: list[Any] = field(default_factory=list)
    # Listings the endpoint's pre-check already made (``ToolRegistry.prepare``): tool set
    # name -> its tools (kernel.tools.ToolInfo) or the error message listing it gave. The
    # agent loop uses them instead of listing (and waiting on a broken server) again.
    listed: dict[str, Any] = field(default_factory=dict)

    def conversation(self) -> list[Item]:
        """History followed by the current input: everything the model should see."""
        return [*self.history, *self.input]

    def offered_tools(self) -> list[ToolSpec]:
        """The tools the provider may offer the model, after ``tool_choice`` narrowing."""
        choice = self.tool_choice
        if choice.mode == "none":
            return []
        return [t for t in self.tools if choice.permits(t.name)]

    def forced_tools(self) -> list[ToolSpec]:
        """The tools one of which must be called, or ``[]`` when no call is forced."""
        return self.offered_tools() if self.tool_choice.forced else []


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class TextDelta:
    """A piece of assistant text."""

    text: str
    kind: Literal["text_delta"] = "text_delta"


@dataclass(slots=True)
class ReasoningDelta:
    """A piece of model reasoning."""

    text: str
    kind: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins; ``index`` identifies it among this run's calls."""

    index: int
    call_id: str
    name: str
    kind: Literal["tool_call_start"] = "tool_call_start"
    tool_kind: ToolKind = "function"


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call's JSON arguments (a custom tool's raw input)."""

    index: int
    arguments: str
    kind: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(slots=True)
class ToolCallDone:
    """A tool call is complete; ``arguments`` is the whole JSON string."""

    index: int
    call_id: str
    name: str
    arguments: str
    kind: Literal["tool_call_done"] = "tool_call_done"
    tool_kind: ToolKind = "function"


@dataclass(slots=True)
class Usage:
    """Token counts; a provider may send it once, near the end."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    # Input tokens written to the provider's prompt cache (when it reports them).
    cache_write_tokens: int = 0
    kind: Literal["usage"] = "usage"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled"]


@dataclass(slots=True)
class Finished:
    """The run ended normally. Always the last event of a successful run."""

    reason: FinishReason = "stop"
    kind: Literal["finished"] = "finished"


# The longest wait a RunError may ask a client for (one day).
MAX_RETRY_AFTER_SECONDS = 86_400.0


def bounded_retry_after(seconds: float) -> float:
    """``seconds`` within ``0 .. MAX_RETRY_AFTER_SECONDS``; ``inf`` is the maximum, ``nan`` 1."""
    if math.isnan(seconds):
        return 1.0
    return min(max(0.0, float(seconds)), MAX_RETRY_AFTER_SECONDS)


@dataclass(slots=True)
class RunError:
    """What went wrong, in terms an endpoint can map to its wire format.

    ``status`` is the HTTP status an endpoint should answer with when nothing has been
    streamed yet: 500 for a provider fault, 502 for an upstream fault, 504 for a
    timeout, 429 when the provider is saturated (with ``retry_after`` seconds), a 4xx
    when the upstream rejected the request.
    """

    message: str
    code: str = "server_error"
    type: str = "server_error"
    status: int = 500
    retry_after: float | None = None
    param: str | None = None

    def __post_init__(self) -> None:
        # retry_after often comes from a peer (an upstream's Retry-After): keep it a
        # finite number of seconds within a day, so every endpoint can format it.
        if self.retry_after is not None:
            self.retry_after = bounded_retry_after(self.retry_after)

    def retry_after_header(self) -> str:
        """``Retry-After`` for this error: whole seconds, at least 1 (so clients really
        wait), at most :data:`MAX_RETRY_AFTER_SECONDS`."""
        seconds = bounded_retry_after(self.retry_after) if self.retry_after is not None else 1.0
        return str(max(1, math.ceil(seconds)))


@dataclass(slots=True)
class Failed:
    """The run ended with an error. Always the last event of a failed run."""

    error: RunError
    kind: Literal["failed"] = "failed"


@dataclass(slots=True)
class ToolsListed:
    """The agent loop listed a server-side tool set (``error`` when it could not)."""

    server: str
    tools: list[dict[str, Any]]
    error: str | None = None
    kind: Literal["tools_listed"] = "tools_listed"


@dataclass(slots=True)
class ServerCallStart:
    """The agent loop starts a server-side tool call; ``name`` is the tool's own name
    (not the model-facing one) and ``arguments`` the model's whole JSON string."""

    call_id: str
    server: str
    name: str
    arguments: str
    kind: Literal["server_call_start"] = "server_call_start"


@dataclass(slots=True)
class ServerCallDone:
    """A server-side tool call ended: ``output`` on success, ``error`` when it failed
    (the model is shown the error as the call's result)."""

    call_id: str
    server: str
    name: str
    arguments: str
    output: str | None = None
    error: str | None = None
    kind: Literal["server_call_done"] = "server_call_done"


@dataclass(slots=True)
class ApprovalRequested:
    """A server-side tool call needs the client's approval; the run ends after it."""

    approval_id: str
    server: str
    name: str
    arguments: str
    kind: Literal["approval_requested"] = "approval_requested"


RunEvent = (TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | ToolCallDone | Usage | Finished | Failed
            | ToolsListed | ServerCallStart | ServerCallDone | ApprovalRequested)
TERMINAL_KINDS = frozenset({"finished", "failed"})


class ProviderError(Exception):
    """Raise from a provider to fail the run with a specific :class:`RunError`."""

    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


# --------------------------------------------------------------------------- providers


@runtime_checkable
class Provider(Protocol):
    """A model backend. One instance per ``[providers.NAME]`` table (or per kind).

    ``stream`` yields run events for one turn and must end with :class:`Finished` or
    :class:`Failed` (the kernel adds ``Finished`` if a provider simply returns, and
    turns an exception into ``Failed``). Cancellation arrives as
    ``asyncio.CancelledError`` inside ``stream``; a provider must stop its work then.

    Optional: ``health() -> dict`` (cheap, synchronous, no network) with ``ok`` and
    whatever else helps an operator (model loaded, queue depth); the console shows it.
    """

    name: str
    accepts_images: bool

    def stream(self, turn: Turn) -> AsyncIterator[RunEvent]: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- codecs

_PART_TYPES: dict[str, type] = {"text": TextPart, "image": ImagePart, "file": FilePart}
_ITEM_TYPES: dict[str, type] = {
    "message": Message,
    "tool_call": ToolCall,
    "tool_result": ToolResult,
    "reasoning": Reasoning,
    "tool_listing": ToolListing,
    "approval_request": ApprovalRequest,
    "approval_response": ApprovalResponse,
}


def item_to_dict(item: Item) -> dict[str, Any]:
    """Serialise an item (for session transcripts and stores)."""
    return asdict(item)


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`."""
    data = dict(data)
    cls = _ITEM_TYPES[data.pop("type")]
    if cls is Message:
        data["parts"] = [_PART_TYPES[p.pop("type")](**p) for p in (dict(p) for p in data["parts"])]
    return cls(**data)
