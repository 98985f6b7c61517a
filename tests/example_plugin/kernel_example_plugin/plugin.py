"""Hook implementations: the module the ``kernel.plugins`` entry point ``example`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kernel import ProviderKind, Schema, hookimpl
from kernel_example_plugin import __version__
from kernel_example_plugin.provider import ReverseOptions, ReverseProvider, reverse_text
from kernel_example_plugin.routes import SCHEMA, blueprint
from kernel_example_plugin.settings import ExampleSettings

if TYPE_CHECKING:
    from pydantic import BaseModel
    from quart import Blueprint

    from kernel.runtime import Kernel


@hookimpl
def register_settings() -> type[BaseModel]:
    return ExampleSettings


@hookimpl
def register_routes(kernel: Kernel, settings: ExampleSettings) -> list[Blueprint]:
    return [blueprint(kernel, settings)]


@hookimpl
def register_providers() -> list[ProviderKind]:
    return [ProviderKind(
        kind="reverse",
        factory=lambda name, options, kernel: ReverseProvider(name, options),
        settings_model=ReverseOptions,
        description="Streams the newest user text reversed.",
    )]


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("example-hello")
    @click.argument("name", default="world")
    @click.option("--reverse", is_flag=True, help="Print the greeting as the reverse provider would.")
    def example_hello(name: str, reverse: bool) -> None:
        """Say hello from the example plugin (a third-party subcommand)."""
        text = f"hello, {name}!"
        click.echo(reverse_text(text) if reverse else text)
        click.echo(f"(kernel-example-plugin {__version__})")


@hookimpl
def register_migrations() -> list[Schema]:
    # Plugins own their tables: the kernel applies these at startup, before any request.
    return [SCHEMA]
