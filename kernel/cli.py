"""The ``kernel`` command: serve, plugins list/enable/disable, routes, config check, store status/migrate.

Enabled plugins add their own subcommands through the ``register_commands`` hook.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import tomlkit

from kernel.config import Settings, load_settings
from kernel.errors import ConfigError
from kernel.plugins import PluginLoadError, installed_entry_points, load_plugins, per_plugin

DEFAULT_CONFIG = "plugins.toml"
# ctx.meta key (shared by the whole command tree) for `kernel --config PATH SUBCOMMAND`.
CONFIG_META = "kernel.config_path"


def default_config_path() -> Path:
    """``kernel --config PATH`` given before the subcommand, else $KERNEL_CONFIG, else plugins.toml.

    Plugin subcommands can call this to find the config the user chose.
    """
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(CONFIG_META) if ctx is not None else None
    return Path(chosen) if chosen is not None else Path(os.environ.get("KERNEL_CONFIG", DEFAULT_CONFIG))


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=default_config_path, show_default="plugins.toml or $KERNEL_CONFIG",
    help="Path to plugins.toml.",
)


def _load(config_path: Path) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _build_app(config_path: Path) -> Any:
    from kernel.app import create_app

    settings = _load(config_path)
    try:
        return create_app(settings)
    except (ConfigError, PluginLoadError) as exc:
        detail = f"{exc}" + (f"\n  caused by: {exc.__cause__!r}" if exc.__cause__ else "")
        raise click.ClickException(detail) from None


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Path to plugins.toml for every subcommand (default: plugins.toml or $KERNEL_CONFIG).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Agent gateway: a plugin microkernel serving standard HTTP APIs for AI agents."""
    if config_path is not None:
        ctx.meta[CONFIG_META] = config_path


@cli.command()
@config_option
@click.option("--host", default=None, help="Bind address (default from [kernel] host).")
@click.option("--port", type=int, default=None, help="Port (default from [kernel] port).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes on the one port (default from [kernel] workers; >1 needs PostgreSQL).")
@click.option("--log-level", default="INFO", show_default=True)
def serve(config_path: Path, host: str | None, port: int | None, workers: int | None, log_level: str) -> None:
    """Serve the gateway with Hypercorn until SIGINT/SIGTERM."""
    from hypercorn.utils import LifespanFailureError

    from kernel.logfmt import configure_logging
    from kernel.serve import PortInUseError, UnsafeBindError
    from kernel.serve import serve as run_server

    configure_logging(log_level)  # one line per record: client text cannot forge log lines
    settings = _load(config_path)
    workers = settings.kernel.workers if workers is None else workers
    if workers > 1:
        _serve_workers(config_path, settings, host, port, workers, log_level)
        return
    app = _build_app(config_path)
    settings = app.extensions["kernel"].settings
    host = host or settings.kernel.host
    port = settings.kernel.port if port is None else port
    try:
        asyncio.run(run_server(app, host, port))
    except (UnsafeBindError, PortInUseError) as exc:
        raise click.ClickException(str(exc)) from None
    except LifespanFailureError as exc:
        # The cause was already logged with its traceback; end with one clear line and exit 1.
        raise click.ClickException(f"the gateway could not start: {exc}") from None
    except KeyboardInterrupt:
        pass


def _serve_workers(config_path: Path, settings: Settings, host: str | None, port: int | None, workers: int,
                   log_level: str) -> None:
    from kernel.serve import PortInUseError, bind_sockets, hypercorn_config
    from kernel.workers import check_workers, serve_workers

    try:
        check_workers(settings, workers)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    host = host or settings.kernel.host
    port = settings.kernel.port if port is None else port
    config = hypercorn_config(host, port, settings.kernel.shutdown_grace_seconds, settings.kernel)
    try:
        sockets = bind_sockets(config, port)
    except PortInUseError as exc:
        raise click.ClickException(str(exc)) from None
    code = serve_workers(config_path, host, port, sockets, workers, log_level, settings.state_dir)
    if code:
        raise click.ClickException("a worker process stopped unexpectedly (see its log above)")


@cli.group()
def plugins() -> None:
    """Inspect, enable and disable plugins."""


@plugins.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_list(config_path: Path, as_json: bool) -> None:
    """Every installed plugin: version, source, enabled, hooks and routes."""
    app = _build_app(config_path)
    records = sorted(app.extensions["kernel"].plugins.values(), key=lambda r: r.name)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    for r in records:
        state = "enabled" if r.enabled else "disabled"
        click.echo(f"{r.name} {r.version} ({r.source}: {r.distribution}) {state}")
        if r.enabled:
            click.echo(f"  hooks: {', '.join(r.hooks) or '-'}")
            if r.providers:
                click.echo(f"  providers: {', '.join(r.providers)}")
            for route in r.routes:
                click.echo(f"  route: {route['methods']} {route['path']}")


def _set_enabled(config_path: Path, name: str, enabled: bool) -> None:
    installed = installed_entry_points()
    if name not in installed:
        raise click.ClickException(
            f"no installed plugin is named {name!r}; installed: {', '.join(sorted(installed))}"
        )
    doc = tomlkit.parse(config_path.read_text(encoding="utf-8")) if config_path.exists() else tomlkit.document()
    plugins_table = doc.get("plugins")
    if plugins_table is None:
        plugins_table = tomlkit.table(is_super_table=True)
        doc["plugins"] = plugins_table
    if name in plugins_table:
        plugins_table[name]["enabled"] = enabled
    else:
        table = tomlkit.table()
        table["enabled"] = enabled
        plugins_table[name] = table
    config_path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    click.echo(f"{name}: {'enabled' if enabled else 'disabled'} in {config_path}")


@plugins.command("enable")
@config_option
@click.argument("name")
def plugins_enable(config_path: Path, name: str) -> None:
    """Enable NAME in plugins.toml (comments and layout are kept)."""
    _set_enabled(config_path, name, True)


@plugins.command("disable")
@config_option
@click.argument("name")
def plugins_disable(config_path: Path, name: str) -> None:
    """Disable NAME in plugins.toml (comments and layout are kept)."""
    _set_enabled(config_path, name, False)


@cli.command()
@config_option
def routes(config_path: Path) -> None:
    """Every route: methods, path and the plugin that owns it."""
    from kernel.app import route_table

    rows = route_table(_build_app(config_path))
    width = max((len(r["methods"]) for r in rows), default=6)
    pwidth = max((len(r["path"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['methods']:<{width}}  {r['path']:<{pwidth}}  {r['plugin']}")


@cli.group()
def tools() -> None:
    """Inspect the server-side tool sets ([tools.NAME] tables)."""


@tools.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def tools_list(config_path: Path, as_json: bool) -> None:
    """Each configured tool set's tools (it is contacted now), or the error reaching it."""
    import asyncio

    from kernel.tools import list_configured

    kernel = _build_app(config_path).extensions["kernel"]
    report = asyncio.run(list_configured(kernel.tools))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo("no [tools] tables are configured")
    for entry in report:
        click.echo(f"{entry['name']} (kind {entry['kind']})")
        if entry["error"] is not None:
            click.echo(f"  error: {entry['error']}")
        for tool in entry["tools"]:
            line = f"  {tool['model_name']}"
            if tool["description"]:
                line += f": {tool['description'].splitlines()[0]}"
            click.echo(line)


@cli.group()
def store() -> None:
    """Inspect and migrate the store (SQLite file or PostgreSQL) that [kernel.store] names."""


@store.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def store_status(config_path: Path, as_json: bool) -> None:
    """Each schema's applied and pending migrations."""
    from kernel.app import get_kernel
    from kernel.store_commands import print_status

    try:
        print_status(get_kernel(_build_app(config_path)), as_json)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None


@store.command("migrate")
@config_option
def store_migrate(config_path: Path) -> None:
    """Apply pending migrations (servers also do this at startup, under the same lock)."""
    from kernel.app import get_kernel
    from kernel.store_commands import run_migrate

    run_migrate(get_kernel(_build_app(config_path)))


@cli.group()
def config() -> None:
    """Work with plugins.toml."""


@config.command("check")
@config_option
def config_check(config_path: Path) -> None:
    """Validate plugins.toml (and every enabled plugin's options); exit 1 on errors."""
    _build_app(config_path)
    click.echo(f"{config_path}: OK")


def build_cli(argv: Sequence[str]) -> click.Group:
    """The command group with enabled plugins' subcommands added.

    The config is read from ``--config`` in ``argv`` (or the default); a broken config
    only hides plugin commands here, the built-in commands report the error.
    """
    path = Path(os.environ.get("KERNEL_CONFIG", DEFAULT_CONFIG))
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            path = Path(args[i + 1])
        elif arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1])
    group = click.Group(name="kernel", commands=dict(cli.commands), help=cli.help, params=list(cli.params),
                        callback=cli.callback)
    try:
        loaded = load_plugins(load_settings(path))
    except (ConfigError, PluginLoadError):
        return group
    for _, impl in per_plugin(loaded.pm, "register_commands"):
        impl(cli=group)
    return group


def main() -> None:
    """Console-script entry point."""
    build_cli(sys.argv[1:])(prog_name="kernel")
