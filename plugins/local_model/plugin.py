"""Hook implementations of the local_model provider plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from kernel import ProviderKind, hookimpl
from kernel.errors import ConfigError
from plugins.local_model.model_file import ModelFileError, resolve_model_path
from plugins.local_model.options import LocalModelOptions
from plugins.local_model.provider import LocalModelProvider

if TYPE_CHECKING:
    from kernel.runtime import Kernel


def build_provider(name: str, options: BaseModel, kernel: Kernel) -> LocalModelProvider:
    """One provider per ``[providers.NAME] kind = "local_model"`` table; the model file is
    found now (a missing file is a config error) but loaded at start or first use."""
    assert isinstance(options, LocalModelOptions)
    try:
        path = resolve_model_path(options.model_path, kernel.settings.path.parent, name)
    except ModelFileError as exc:
        raise ConfigError(f"{kernel.settings.path}: {exc}") from None
    return LocalModelProvider(name, options, path)


@hookimpl
def register_providers() -> list[ProviderKind]:
    return [ProviderKind(
        kind="local_model",
        factory=build_provider,
        settings_model=LocalModelOptions,
        description="A small GGUF model inside the gateway (default SmolLM2-135M-Instruct): offline, no key.",
    )]
