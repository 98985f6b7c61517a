"""Durable storage for responses: records, chains, event logs, retention.

``base`` defines the interface; ``sql`` implements it on the kernel's store (SQLite or
PostgreSQL: the kernel picks the backend, this plugin never imports a driver).
"""

from plugins.openresponses.storage.base import (
    ChainLink,
    InputItemsPage,
    ResponsePage,
    ResponseRecord,
    ResponseStore,
    StoredEvent,
)
from plugins.openresponses.storage.sql import SCHEMA, SqlResponseStore

__all__ = [
    "SCHEMA", "ChainLink", "InputItemsPage", "ResponsePage", "ResponseRecord", "ResponseStore", "SqlResponseStore",
    "StoredEvent",
]
