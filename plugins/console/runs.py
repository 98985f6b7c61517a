"""Live runs from the kernel's run registry: listed by owner (admins see all) and cancelled."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kernel import ApiError, ReasoningDelta, TextDelta, ToolCallDelta, Usage, is_admin

if TYPE_CHECKING:
    from kernel.runs import Run
    from kernel.runtime import Kernel

_STREAMED = (TextDelta, ReasoningDelta, ToolCallDelta)


def visible(run: Run, principal: str | None) -> bool:
    """A run is the principal's own, or the principal is an admin."""
    return is_admin(principal) or run.principal == principal


def tokens_so_far(run: Run) -> int:
    """Output tokens so far: the provider's usage count once reported, else the streamed pieces."""
    reported = next((ev for ev in reversed(run.events_log) if isinstance(ev, Usage)), None)
    if reported is not None and reported.output_tokens:
        return reported.output_tokens
    return sum(1 for ev in run.events_log if isinstance(ev, _STREAMED))


def describe(run: Run, now: float) -> dict[str, Any]:
    return {
        "id": run.id, "agent": run.agent.name, "principal": run.principal, "status": run.status,
        "background": run.background, "created_at": run.created_at,
        "age_seconds": round(now - run.created_at, 1), "tokens_so_far": tokens_so_far(run),
    }


def active_runs(kernel: Kernel, principal: str | None) -> list[dict[str, Any]]:
    """In-flight runs the principal may see, oldest first."""
    now = time.time()
    runs = sorted((r for r in kernel.runs.active() if visible(r, principal)), key=lambda r: r.created_at)
    return [describe(r, now) for r in runs]


def cancel_run(kernel: Kernel, principal: str | None, run_id: str) -> dict[str, Any]:
    """Cancel a run the principal may see; another key's run answers 404 like a missing one."""
    run = kernel.runs.get(run_id)
    if run is None or not visible(run, principal):
        raise ApiError(404, f"run {run_id!r} was not found (it may have finished long ago, or belong to another "
                       "API key)", param="run_id", code="run_not_found")
    if not run.cancel():
        raise ApiError(409, f"run {run_id!r} has already finished (status {run.status!r})", param="run_id",
                       code="run_not_cancellable")
    return {"id": run.id, "object": "run", "cancel_requested": True, "status": run.status}
