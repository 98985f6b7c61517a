"""Provider kinds, and the table of provider instances built from plugins.toml."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from kernel.types import Provider

if TYPE_CHECKING:
    from kernel.runtime import Kernel


class NoOptions(BaseModel):
    """Settings model for provider kinds that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ProviderKind:
    """A kind of model backend a plugin contributes.

    ``factory(name, options, kernel)`` builds one instance for the ``[providers.NAME]``
    table (or for an agent naming the kind directly, with default options).
    """

    kind: str
    factory: Callable[[str, BaseModel, Kernel], Provider]
    settings_model: type[BaseModel] = NoOptions
    description: str = ""
