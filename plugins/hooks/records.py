"""Hook run records in the kernel's store, kept for ``run_retention_seconds``.

The kernel's run registry forgets finished runs after a few minutes and everything
at a restart; a webhook sender polling ``GET <base>/runs/<id>`` needs longer, so
the plugin keeps its own small table. A run that was still going when the gateway
stopped is marked ``failed`` (code ``interrupted``) at the next start.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from kernel.store import Migration, Schema, Store, migrate
from kernel.store.leases import Leases

# A hook run's output is kept up to this many characters (the rest is cut, and flagged).
MAX_OUTPUT_CHARS = 100_000
PURGE_INTERVAL_SECONDS = 60.0

SCHEMA = Schema("hooks", (
    Migration(1, "hook run records", (
        """CREATE TABLE IF NOT EXISTS hook_runs (
            run_id TEXT PRIMARY KEY,
            hook TEXT NOT NULL,
            name TEXT NOT NULL,
            agent TEXT NOT NULL,
            session_key TEXT NOT NULL,
            status TEXT NOT NULL,
            output_text TEXT NOT NULL DEFAULT '',
            output_truncated INTEGER NOT NULL DEFAULT 0,
            usage TEXT,
            error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION
        )""",
        "CREATE INDEX IF NOT EXISTS hook_runs_finished_at ON hook_runs (finished_at)",
    )),
    Migration(2, "hook runs: the process running each (its lease)", (
        "ALTER TABLE hook_runs ADD COLUMN instance_id TEXT NOT NULL DEFAULT ''",
    )),
))


def clip_output(text: str) -> tuple[str, bool]:
    """The output as a record keeps it, and whether anything was cut."""
    return text[:MAX_OUTPUT_CHARS], len(text) > MAX_OUTPUT_CHARS


@dataclass
class HookRunRecord:
    """What ``GET <base>/runs/<id>`` reports about one run."""

    run_id: str
    hook: str
    name: str
    agent: str
    session_key: str
    status: str
    created_at: float
    output_text: str = ""
    output_truncated: bool = False
    usage: dict[str, int] | None = None
    error: dict[str, Any] | None = None
    finished_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


class HookRunStore:
    """Create, finish, read and expire hook run records."""

    def __init__(self, store: Store, retention_seconds: float, leases: Leases) -> None:
        self.store = store
        self.retention_seconds = retention_seconds
        self.leases = leases
        self._last_purge = float("-inf")

    async def open(self) -> None:
        """Create the table, close out runs a stopped process left unfinished, and have the
        housekeeping leader do so whenever a process's lease expires."""
        await migrate(self.store, [SCHEMA])
        await self.fail_orphaned()
        self.leases.add_reaper("hook run(s)", self.fail_orphaned)
        await self.purge()

    async def fail_orphaned(self) -> int:
        """Mark unfinished runs whose process holds no lease failed (code ``interrupted``)."""
        error = json.dumps({"message": "the gateway stopped before this run finished",
                            "type": "server_error", "code": "interrupted"})
        orphaned, params = self.leases.orphaned("hook_runs.instance_id")
        return await self.store.execute(
            f"UPDATE hook_runs SET status = 'failed', error = ?, finished_at = ? WHERE finished_at IS NULL "
            f"AND {orphaned}", (error, time.time(), *params),
        )

    async def create(self, record: HookRunRecord) -> None:
        # Housekeeping at most once a minute: reads already hide expired records.
        if time.monotonic() - self._last_purge > PURGE_INTERVAL_SECONDS:
            await self.purge()
        await self.store.execute(
            "INSERT INTO hook_runs (run_id, hook, name, agent, session_key, status, created_at, instance_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.run_id, record.hook, record.name, record.agent, record.session_key, record.status,
             record.created_at, self.leases.instance_id),
        )

    async def finish(self, run_id: str, *, status: str, output_text: str, usage: dict[str, int] | None,
                     error: dict[str, Any] | None, finished_at: float) -> None:
        kept, truncated = clip_output(output_text)
        await self.store.execute(
            "UPDATE hook_runs SET status = ?, output_text = ?, output_truncated = ?, usage = ?, error = ?, "
            "finished_at = ? WHERE run_id = ?",
            (status, kept, int(truncated), json.dumps(usage) if usage else None,
             json.dumps(error) if error else None, finished_at, run_id),
        )

    async def get(self, run_id: str) -> HookRunRecord | None:
        """The record, unless it is unknown or past its retention."""
        row = await self.store.fetchone("SELECT * FROM hook_runs WHERE run_id = ?", (run_id,))
        if row is None:
            return None
        if row["finished_at"] is not None and time.time() - row["finished_at"] > self.retention_seconds:
            return None
        return HookRunRecord(
            run_id=row["run_id"], hook=row["hook"], name=row["name"], agent=row["agent"],
            session_key=row["session_key"], status=row["status"], created_at=row["created_at"],
            output_text=row["output_text"], output_truncated=bool(row["output_truncated"]),
            usage=json.loads(row["usage"]) if row["usage"] else None,
            error=json.loads(row["error"]) if row["error"] else None,
            finished_at=row["finished_at"],
        )

    async def purge(self) -> None:
        """Delete records whose retention has passed (the housekeeping leader's job)."""
        self._last_purge = time.monotonic()
        if not await self.store.lead():
            return
        await self.store.execute(
            "DELETE FROM hook_runs WHERE finished_at IS NOT NULL AND finished_at < ?",
            (time.time() - self.retention_seconds,),
        )
