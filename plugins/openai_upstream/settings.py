"""Options of one ``[providers.NAME] kind = "openai_upstream"`` table."""

from __future__ import annotations

import re
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# RFC 9110 field names are tokens; values may not hold control characters (CR/LF would
# split the request). httpx only finds out when it sends, and then every retry fails.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class UpstreamOptions(BaseModel):
    """One upstream server. Several tables of this kind may coexist (ollama, openai ...)."""

    model_config = ConfigDict(extra="forbid")

    # The API root that ends before /chat/completions, e.g. http://127.0.0.1:11434/v1.
    base_url: str
    # Sent as "Authorization: Bearer ..."; write "${OPENAI_API_KEY}" to read it from the
    # environment. SecretStr keeps it out of reprs, logs and error messages.
    api_key: SecretStr | None = None
    # Upstream model used when the agent and the request name none.
    model: str | None = None
    # Extra headers on every upstream request (e.g. OpenRouter's HTTP-Referer, or
    # Azure's "api-key"); they may override the Authorization header.
    headers: dict[str, str] = Field(default_factory=dict)
    # Extra top-level fields merged into every request body (e.g. Ollama's
    # {"options": {"num_ctx": 8192}}); fields the turn sets win.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    connect_timeout: float = Field(10.0, gt=0)
    # Longest silence while waiting for the response headers or the next stream bytes.
    read_timeout: float = Field(120.0, gt=0)
    # Ceiling on one whole request, slot wait and retries included; None means unbounded.
    total_timeout: float | None = Field(600.0, gt=0)
    # Retries for connection errors and 408/409/429/5xx answers, only before the
    # first byte of a response body arrived (a started stream is never replayed).
    max_retries: int = Field(2, ge=0, le=10)
    backoff_initial: float = Field(0.5, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    # A Retry-After longer than this is not waited for: the run fails with 429 and
    # the upstream's Retry-After, so the client decides.
    max_retry_after: float = Field(30.0, ge=0)
    # The longest line, and the most data in one event, of the upstream's event stream;
    # a longer one fails the run (upstream_bad_response) instead of growing a buffer.
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # The largest whole (non-streamed) completion read when a server ignores stream=true.
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # Requests in flight at once against this upstream; further runs wait for a slot.
    max_concurrency: int = Field(16, ge=1)
    accepts_images: bool = True
    # OpenAI's newer models only accept max_completion_tokens; most other servers
    # know max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Ask for a final usage chunk (stream_options.include_usage); turn off for old
    # servers that reject stream_options.
    stream_usage: bool = True
    # Send earlier reasoning back as the assistant message's reasoning_content. Off by
    # default: OpenAI rejects the field and DeepSeek answers 400 when it is sent back.
    send_reasoning: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:11434/v1, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _header_safe_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A key read from a file or .env often ends in a newline: trim it rather than fail.
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not key or _CONTROL.search(key):
            # Never echo the key itself.
            raise ValueError("must be a non-empty key without control characters (check the variable's value)")
        return SecretStr(key)

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name (letters, digits and -, no spaces)")
            if _CONTROL.search(text):
                raise ValueError(f"the value of header {name!r} contains a line break or control character")
        return value

    @property
    def host(self) -> str:
        """``host[:port]`` of the upstream, for error messages (never the path or userinfo)."""
        url = httpx.URL(self.base_url)
        return f"{url.host}:{url.port}" if url.port else url.host
