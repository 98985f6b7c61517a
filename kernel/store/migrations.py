"""Versioned migrations: how the kernel and plugins declare their tables.

A :class:`Schema` is a namespace (the kernel's own is ``kernel``; a plugin uses its
name) with numbered :class:`Migration` steps. Each step is SQL text or an async
function of the open transaction (for work that differs by dialect); a step and the
row recording it commit together. The kernel applies every declared schema at
startup under the store's migration lock (a PostgreSQL advisory lock: N processes
starting at once migrate once), and ``kernel store migrate`` does the same offline.
Applied versions are kept in ``kernel_migrations``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from kernel.store.base import Store, Transaction

log = logging.getLogger("kernel.store")

Step = str | Callable[[Transaction], Awaitable[None]]

LEDGER = """CREATE TABLE IF NOT EXISTS kernel_migrations (
    namespace TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, version)
)"""


class MigrationError(RuntimeError):
    """A schema cannot be applied (bad declaration, or a database newer than the code)."""


@dataclass(frozen=True)
class Migration:
    """One version of a namespace's tables: its steps run in order, in one transaction."""

    version: int
    description: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Schema:
    """A namespace's migrations, versions 1, 2, 3 ... in order."""

    namespace: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise MigrationError(f"schema {self.namespace!r}: versions must be 1, 2, 3 ... in order, got {versions}")


@dataclass
class SchemaStatus:
    """Where one namespace stands in a database."""

    namespace: str
    applied: list[int] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    # Versions the database has but this code does not know (a newer release migrated it).
    unknown: list[int] = field(default_factory=list)


async def _has_ledger(store: Store) -> bool:
    if store.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kernel_migrations'"
    else:
        sql = "SELECT 1 WHERE to_regclass('kernel_migrations') IS NOT NULL"
    return await store.fetchone(sql) is not None


async def _applied(store: Store) -> dict[str, set[int]]:
    # Read-only (the ledger is made under the migration lock: concurrent CREATE TABLE IF
    # NOT EXISTS can fail on PostgreSQL).
    if not await _has_ledger(store):
        return {}
    rows = await store.fetchall("SELECT namespace, version FROM kernel_migrations")
    out: dict[str, set[int]] = {}
    for row in rows:
        out.setdefault(row["namespace"], set()).add(int(row["version"]))
    return out


def _check_unique(schemas: Iterable[Schema]) -> list[Schema]:
    seen: set[str] = set()
    out = []
    for schema in schemas:
        if schema.namespace in seen:
            raise MigrationError(f"schema namespace {schema.namespace!r} is declared twice")
        seen.add(schema.namespace)
        out.append(schema)
    return out


async def status(store: Store, schemas: Iterable[Schema]) -> list[SchemaStatus]:
    """Applied, pending and unknown versions of each schema (reads only)."""
    applied = await _applied(store)
    out = []
    for schema in _check_unique(schemas):
        have = applied.get(schema.namespace, set())
        known = {m.version for m in schema.migrations}
        out.append(SchemaStatus(schema.namespace, sorted(have & known),
                                [m for m in schema.migrations if m.version not in have], sorted(have - known)))
    return out


async def migrate(store: Store, schemas: Iterable[Schema]) -> list[tuple[str, int]]:
    """Apply every pending migration, under the store's migration lock; returns what ran.

    Already up to date costs one read and takes no lock. A database migrated by a newer
    release (versions this code does not know) is refused rather than written.
    """
    schemas = _check_unique(schemas)
    if not any(s.pending for s in await status(store, schemas)):
        return []
    ran: list[tuple[str, int]] = []
    async with store.exclusive():
        async with store.transaction() as tx:
            await tx.execute(LEDGER)
        # Another process may have migrated while this one waited for the lock.
        for st in await status(store, schemas):
            if st.unknown:
                raise MigrationError(
                    f"the store has {st.namespace} schema version(s) {st.unknown} that this release does not know; "
                    "it was migrated by a newer release: upgrade this one")
            for migration in st.pending:
                started = time.monotonic()
                async with store.transaction() as tx:
                    for step in migration.steps:
                        if isinstance(step, str):
                            await tx.execute(step)
                        else:
                            await step(tx)
                    await tx.execute(
                        "INSERT INTO kernel_migrations (namespace, version, description, applied_at) "
                        "VALUES (?, ?, ?, ?)", (st.namespace, migration.version, migration.description, time.time()))
                log.info("store: applied %s migration %d (%s) in %.2fs", st.namespace, migration.version,
                         migration.description, time.monotonic() - started)
                ran.append((st.namespace, migration.version))
    return ran
