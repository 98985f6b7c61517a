"""Durable storage for responses: records, chains, event logs, retention.

``base`` defines the interface a server database can implement later; ``sqlite`` is
the embedded implementation on the kernel's store.
"""

from plugins.openresponses.storage.base import (
    ChainLink,
    InputItemsPage,
    ResponsePage,
    ResponseRecord,
    ResponseStore,
    StoredEvent,
)
from plugins.openresponses.storage.sqlite import SqliteResponseStore

__all__ = ["ChainLink", "InputItemsPage", "ResponsePage", "ResponseRecord", "ResponseStore", "SqliteResponseStore",
           "StoredEvent"]
