"""Hook implementations of the openai_upstream provider plugin."""

from __future__ import annotations

from kernel import ProviderKind, hookimpl
from plugins.openai_upstream.provider import UpstreamProvider
from plugins.openai_upstream.settings import UpstreamOptions


@hookimpl
def register_providers() -> list[ProviderKind]:
    """One provider kind; every ``[providers.NAME] kind = "openai_upstream"`` is an instance."""
    return [ProviderKind(
        kind="openai_upstream",
        factory=lambda name, options, kernel: UpstreamProvider(name, options, observers=kernel.observers),
        settings_model=UpstreamOptions,
        description="Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp ...).",
    )]
