"""Durable state behind one interface: SQLite by default (aiosqlite), PostgreSQL for a
server database (asyncpg). See :mod:`kernel.store.base` for the contract and
:mod:`kernel.store.migrations` for how tables are declared."""

from __future__ import annotations

from pathlib import Path

from kernel.store.base import Dialect, Row, Store, Transaction
from kernel.store.migrations import Migration, MigrationError, Schema, SchemaStatus, migrate, status
from kernel.store.sqlite import SqliteStore

DB_FILE = "kernel.sqlite3"

__all__ = [
    "DB_FILE", "Dialect", "Migration", "MigrationError", "Row", "Schema", "SchemaStatus", "SqliteStore", "Store",
    "Transaction", "is_postgres_url", "migrate", "open_store", "status",
]


def is_postgres_url(url: str) -> bool:
    """True for ``postgresql://`` / ``postgres://`` URLs."""
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str, state_dir: Path, *, pool_size: int = 10) -> Store:
    """The backend a ``[kernel.store] url`` names: empty or ``sqlite`` is the embedded file
    ``<state_dir>/kernel.sqlite3``; a ``postgresql://`` URL is a server database."""
    if is_postgres_url(url):
        from kernel.store.postgres import PostgresStore  # asyncpg only when asked for

        return PostgresStore(url, pool_size=pool_size)
    return SqliteStore(state_dir / DB_FILE)
