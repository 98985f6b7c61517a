"""``kernel usage``: usage per key from the state directory, without a running server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from plugins.observability.usage import GROUP_COLUMNS


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
    def usage(config_path: Path, principal: str | None, since: str | None, until: str | None, group_by: str,
              as_json: bool) -> None:
        """Runs and tokens per key (and per day, agent or model), from the durable usage records.

        Reads the store directly; a running server writes its newest runs within
        usage_flush_seconds (1 s by default).
        """
        from kernel.config import load_settings
        from kernel.errors import ApiError, ConfigError
        from kernel.store import DB_FILE
        from plugins.observability.routes import parse_time
        from plugins.observability.usage import _summary_row, _where

        try:
            settings = load_settings(config_path)
            start, end = parse_time(since, "since"), parse_time(until, "until")
        except (ConfigError, ApiError) as exc:
            raise click.ClickException(str(exc)) from None
        db = settings.state_dir / DB_FILE
        if not db.exists():
            raise click.ClickException(f"{db}: no store yet (the server has not run with this state_dir)")
        where, params = _where(principal, start, end)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            try:
                found = conn.execute(
                    f"SELECT principal, {GROUP_COLUMNS[group_by]} AS grp, SUM(runs) AS runs, "
                    "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens FROM usage_runs "
                    f"{where} GROUP BY principal, grp ORDER BY grp, principal", params).fetchall()
            except sqlite3.OperationalError:
                found = []  # the observability plugin never ran here: no usage recorded
        rows = [_summary_row(row, group_by) for row in found]  # type: ignore[arg-type]
        if as_json:
            click.echo(json.dumps({"group_by": group_by, "data": rows}, indent=2))
            return
        columns = ["principal", *([group_by] if group_by != "principal" else []), "runs", "input_tokens",
                   "output_tokens", "total_tokens"]
        table = [columns, *[[str(r[c]) for c in columns] for r in rows]]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
