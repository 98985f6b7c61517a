"""Hook implementations of the echo provider plugin."""

from __future__ import annotations

from kernel import ProviderKind, hookimpl
from plugins.echo.provider import EchoOptions, EchoProvider


@hookimpl
def register_providers() -> list[ProviderKind]:
    return [ProviderKind(
        kind="echo",
        factory=lambda name, options, kernel: EchoProvider(name, options),
        settings_model=EchoOptions,
        description="Deterministic: streams the last user text back word by word.",
    )]
