"""``[plugins.openresponses]`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernel.media import MediaLimits
from plugins.openresponses.hosted import HostedToolsPolicy
from plugins.openresponses.retention import parse_duration

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Inline media count twice in a stored response (as sent, and as the model saw them),
# so the cap leaves room for a request at max_body_bytes plus its answer and events.
DEFAULT_MAX_STORED_BYTES = 64 * 1024 * 1024


class OpenResponsesSettings(BaseModel):
    """Options of the OpenResponses plugin; every one has a safe default."""

    model_config = ConfigDict(extra="forbid")

    # Largest request body accepted; inline images and files (base64) make bodies big.
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    # Input image/file limits and the URL fetch guard: [plugins.openresponses.media].
    media: MediaLimits = Field(default_factory=MediaLimits)
    # Fail a run that takes longer than this (HTTP 504, or an error event once streaming).
    run_timeout_seconds: float | None = Field(None, gt=0)
    # Seconds of silence on a stream before a ": ping" comment keeps proxies from closing it.
    keepalive_seconds: float = Field(15.0, gt=0)
    # Hosted tools the gateway does not run (web_search, file_search, mcp ...): "omit" leaves
    # them out of the model's view (echoed, logged, named in x-kernel-omitted-tools);
    # "reject" answers 400 naming the tool.
    hosted_tools: HostedToolsPolicy = "omit"

    # ---- WebSocket mode (GET /v1/responses with an upgrade)
    # A connection is closed after this long (the spec's 60 minutes): the client gets an
    # error event with code websocket_connection_limit_reached, then a clean close.
    websocket_max_connection_seconds: float = Field(3600.0, gt=0)
    # A connection with no turn running and no message for this long is closed.
    websocket_idle_timeout_seconds: float = Field(600.0, gt=0)

    # ---- stored responses
    # How long stored responses are kept ("30d", "12h", ...; "0" or "none": forever).
    retention: str = "30d"
    # How often the retention sweep runs.
    sweep_interval_seconds: float = Field(3600.0, gt=0)
    # Largest stored response (input as sent and as seen, output, resource, event log).
    # A request whose input alone is larger gets 400; a response that grows past it is
    # answered normally but not kept (later reads say why).
    max_stored_bytes: int = Field(DEFAULT_MAX_STORED_BYTES, gt=0)
    # previous_response_id naming a response still running: wait this long for it to
    # finish, then answer 409 (0 answers 409 at once).
    chain_wait_seconds: float = Field(30.0, ge=0)

    # ---- conversations (/v1/conversations)
    # How long a conversation idle this long is kept ("90d", "0"/"none": forever); unset
    # follows ``retention``. Conversations made by key (x-session-key) are not swept.
    conversation_retention: str | None = None

    @field_validator("retention", "conversation_retention")
    @classmethod
    def _valid_retention(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def retention_seconds(self) -> float | None:
        """The retention in seconds, or None to keep stored responses forever."""
        return parse_duration(self.retention)
