"""``kernel store status`` and ``kernel store migrate``: the store's schemas, offline.

Both build the kernel from plugins.toml (so every enabled plugin's declared schema is
known) and open its store without serving. ``migrate`` on SQLite takes the state
directory's lock (a running server already migrated at its start); on PostgreSQL it
takes the migration advisory lock, so it is safe beside running servers.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import click

from kernel.errors import ConfigError
from kernel.statelock import StateDirBusyError, StateDirLock
from kernel.store import status

if TYPE_CHECKING:
    from kernel.runtime import Kernel


async def _status(kernel: Kernel) -> list[dict[str, object]]:
    await kernel.store.open()
    try:
        return [{"namespace": st.namespace, "applied": st.applied,
                 "pending": [{"version": m.version, "description": m.description} for m in st.pending],
                 "unknown": st.unknown}
                for st in await status(kernel.store, kernel.schemas)]
    finally:
        await kernel.store.close()


async def _migrate(kernel: Kernel) -> list[tuple[str, int]]:
    lock = StateDirLock(kernel.state_dir) if kernel.store.dialect == "sqlite" else None
    if lock is not None:
        lock.acquire()
    try:
        await kernel.store.open()
        try:
            return await kernel.migrate_store()
        finally:
            await kernel.store.close()
    finally:
        if lock is not None:
            lock.release()


def print_status(kernel: Kernel, as_json: bool) -> None:
    """``kernel store status``."""
    rows = asyncio.run(_status(kernel))
    if as_json:
        click.echo(json.dumps({"store": kernel.store.describe(), "schemas": rows}, indent=2))
        return
    click.echo(f"store: {kernel.store.describe()}")
    for row in rows:
        applied = row["applied"]
        version = max(applied) if isinstance(applied, list) and applied else 0
        pending = row["pending"]
        state = "up to date" if not pending else f"{len(pending)} pending"  # type: ignore[arg-type]
        click.echo(f"  {row['namespace']}: version {version} ({state})")
        for step in pending:  # type: ignore[union-attr]
            click.echo(f"    pending {step['version']}: {step['description']}")
        if row["unknown"]:
            click.echo(f"    unknown versions {row['unknown']}: migrated by a newer release")


def run_migrate(kernel: Kernel) -> None:
    """``kernel store migrate``."""
    try:
        ran = asyncio.run(_migrate(kernel))
    except (ConfigError, StateDirBusyError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"store: {kernel.store.describe()}")
    if not ran:
        click.echo("  up to date: nothing to apply")
    for namespace, version in ran:
        click.echo(f"  applied {namespace} {version}")



