"""``[plugins.chat_completions]`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kernel.media import MediaLimits

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024


class ChatCompletionsSettings(BaseModel):
    """Options of the Chat Completions plugin; every one has a safe default."""

    model_config = ConfigDict(extra="forbid")

    # Largest request body accepted; inline (data URL) images make chat bodies big.
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    # Image limits and the fetch guard for image_url parts: [plugins.chat_completions.media].
    media: MediaLimits = Field(default_factory=MediaLimits)
    # Fail a run that takes longer than this (504 before streaming, an error event after).
    run_timeout_seconds: float | None = Field(None, gt=0)
    # Send model reasoning as a non-standard `reasoning_content` field (as DeepSeek and vLLM
    # do). Off by default: OpenAI's own Chat Completions never carries reasoning text.
    expose_reasoning: bool = False
