"""Hook implementations of the ``hooks`` plugin (webhooks that wake the main session or start runs)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from pydantic import BaseModel
from quart import Blueprint

from kernel import Schema, hookimpl
from kernel.errors import ConfigError
from plugins.hooks.records import SCHEMA
from plugins.hooks.routes import build_blueprint
from plugins.hooks.service import HooksService
from plugins.hooks.settings import HooksSettings
from plugins.hooks.templates import is_template

if TYPE_CHECKING:
    from kernel.runtime import Kernel

EXTENSION = "hooks"


def _service(kernel: Kernel) -> HooksService:
    assert kernel.app is not None
    return kernel.app.extensions[EXTENSION]


def _check_static_agents(kernel: Kernel, settings: HooksSettings) -> None:
    """A mapping that names an agent outright must name a configured one (fail at startup)."""
    for i, mapping in enumerate(settings.mappings):
        if mapping.agent and not is_template(mapping.agent) and mapping.agent not in kernel.agents:
            known = ", ".join(sorted(kernel.agents.agents)) or "(none)"
            raise ConfigError(
                f"{kernel.settings.path}: [plugins.hooks.mappings.{i}] agent: {mapping.agent!r} "
                f"(mapping {mapping.path!r}) is not a configured agent; known agents: {known}"
            )


@hookimpl
def register_settings() -> type[BaseModel]:
    return HooksSettings


@hookimpl
def register_migrations() -> list[Schema]:
    return [SCHEMA]


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    assert isinstance(settings, HooksSettings) and kernel.app is not None
    _check_static_agents(kernel, settings)
    service = HooksService(kernel, settings)
    kernel.app.extensions[EXTENSION] = service
    return [build_blueprint(service)]


@hookimpl
def startup(kernel: Kernel) -> Awaitable[None]:
    return _service(kernel).start()


@hookimpl
def shutdown(kernel: Kernel) -> Awaitable[None]:
    return _service(kernel).stop()
