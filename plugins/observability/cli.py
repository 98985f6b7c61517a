"""``kernel usage``: usage per key from the kernel's store, without a running server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from plugins.observability.ledger import GROUP_COLUMNS, GroupBy

if TYPE_CHECKING:
    from kernel.config import Settings


async def read_usage(settings: Settings, *, principal: str | None, since: float | None, until: float | None,
                     group_by: GroupBy) -> list[dict[str, Any]]:
    """The ledger's sums, read through the store ``[kernel.store]`` names (SQLite or PostgreSQL)."""
    from kernel.store import DB_FILE, is_postgres_url, open_store
    from plugins.observability import ledger

    url = settings.kernel.store.url
    if not is_postgres_url(url) and not (settings.state_dir / DB_FILE).exists():
        raise click.ClickException(f"{settings.state_dir / DB_FILE}: no store yet "
                                   "(the server has not run with this state_dir)")
    store = open_store(url, settings.state_dir, pool_size=1)
    try:
        await store.open()
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if not await ledger.has_ledger(store):
            return []  # the observability plugin never ran on this store: no usage recorded
        return await ledger.summarise(store, principal=principal, since=since, until=until, group_by=group_by)
    finally:
        await store.close()


def register(cli: click.Group) -> None:
    """Add ``kernel usage`` to the command group."""
    from kernel.cli import config_option

    @cli.command("usage")
    @config_option
    @click.option("--principal", default=None, help="Only this key (default: every key).")
    @click.option("--since", default=None, help="From this date, ISO date-time or Unix time (UTC).")
    @click.option("--until", default=None, help="Before this date, ISO date-time or Unix time (UTC).")
    @click.option("--group-by", "group_by", type=click.Choice(list(GROUP_COLUMNS)), default="principal",
                  show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def usage(config_path: Path, principal: str | None, since: str | None, until: str | None, group_by: GroupBy,
              as_json: bool) -> None:
        """Runs and tokens per key (and per day, agent or model), from the durable usage records.

        Reads the store [kernel.store] names (the SQLite file in state_dir, or PostgreSQL);
        a running server writes its newest runs within usage_flush_seconds (1 s by default).
        """
        from kernel.config import load_settings
        from kernel.errors import ApiError, ConfigError
        from plugins.observability.routes import parse_time

        try:
            settings = load_settings(config_path)
            start, end = parse_time(since, "since"), parse_time(until, "until")
        except (ConfigError, ApiError) as exc:
            raise click.ClickException(str(exc)) from None
        rows = asyncio.run(read_usage(settings, principal=principal, since=start, until=end, group_by=group_by))
        if as_json:
            click.echo(json.dumps({"group_by": group_by, "data": rows}, indent=2))
            return
        columns = ["principal", *([group_by] if group_by != "principal" else []), "runs", "input_tokens",
                   "output_tokens", "total_tokens"]
        table = [columns, *[[str(r[c]) for c in columns] for r in rows]]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
