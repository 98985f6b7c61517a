"""Hook implementations of the OpenResponses plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from quart import Blueprint

from kernel import hookimpl
from plugins.openresponses.routes import blueprint
from plugins.openresponses.settings import OpenResponsesSettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel


@hookimpl
def register_settings() -> type[BaseModel]:
    return OpenResponsesSettings


@hookimpl
def register_routes(kernel: Kernel, settings: BaseModel | None) -> list[Blueprint]:
    opts = settings if isinstance(settings, OpenResponsesSettings) else OpenResponsesSettings()
    return [blueprint(kernel, opts)]
