"""What a hook does once it is accepted: wake the main session or run an agent.

Every piece of text from outside reaches the model inside an untrusted-content block
(:mod:`plugins.hooks.untrusted`); the hook instructions travel in ``Turn.system``.
Agent runs are followed to their end so their record can be finished and a one-line
summary posted to the main session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kernel import ApiError, Message, TextPart, Turn
from kernel.runs import Run, RunResult
from kernel.sessions import main_session_key, validate_session_key
from plugins.hooks.ratelimit import RateLimiter
from plugins.hooks.records import HookRunRecord, HookRunStore, clip_output
from plugins.hooks.settings import HooksSettings
from plugins.hooks.untrusted import wrap

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("kernel.hooks")

WakeMode = Literal["now", "next-heartbeat"]
# Hook runs and their sessions belong to this principal: a hook's session keys never reach
# an API key's sessions, and it is the principal the kernel lets into the main session.
PRINCIPAL = "hooks"
SUMMARY_EXCERPT_CHARS = 160
MAX_DISPLAY_NAME = 80
STOP_GRACE_SECONDS = 5.0


@dataclass
class AgentJob:
    """A validated request for an agent run (from ``/agent`` or a mapping)."""

    hook: str  # trusted label: "agent" or the mapping's configured path
    name: str
    message: str  # untrusted
    agent: str
    session_key: str
    wake_mode: WakeMode = "now"
    model: str | None = None
    timeout_seconds: float | None = None
    summary_to_main: bool = True
    metadata: dict[str, str] = field(default_factory=dict)


def display_name(name: str) -> str:
    """A name for one summary line: whitespace collapsed, bounded."""
    flat = " ".join(name.split())
    return flat if len(flat) <= MAX_DISPLAY_NAME else flat[: MAX_DISPLAY_NAME - 1] + "…"


def summary_line(name: str, result: RunResult) -> str:
    """``Hook <name>: <status>: <first line of output, truncated>`` (the error's, for a failed run)."""
    text = result.error.message if result.error is not None else result.text
    first = next((line.strip() for line in text.splitlines() if line.strip()), "(no output)")
    if len(first) > SUMMARY_EXCERPT_CHARS:
        first = first[: SUMMARY_EXCERPT_CHARS - 1] + "…"
    return f"Hook {display_name(name)}: {result.status}: {first}"


def _usage(result: RunResult) -> dict[str, int] | None:
    u = result.usage
    if u is None:
        return None
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens, "total_tokens": u.total_tokens}


def _error(result: RunResult) -> dict[str, Any] | None:
    e = result.error
    return None if e is None else {"message": e.message, "type": e.type, "code": e.code}


class HooksService:
    """The plugin's runtime state for one app: records, rate limits, run followers."""

    def __init__(self, kernel: Kernel, settings: HooksSettings) -> None:
        self.kernel = kernel
        self.settings = settings
        kernel.sessions.allow_main_session(PRINCIPAL)
        self.records = HookRunStore(kernel.store, settings.run_retention_seconds, kernel.leases)
        self.limiter = RateLimiter()
        self._followers: set[asyncio.Task[None]] = set()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the records table (the store is open by now)."""
        self._stopping = False
        await self.records.open()

    async def stop(self) -> None:
        """Let followers record the runs the kernel just drained, then cancel the rest."""
        self._stopping = True
        pending = set(self._followers)
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()

    # ------------------------------------------------------------------ helpers

    @property
    def default_agent(self) -> str:
        return self.kernel.agents.default

    @property
    def main_key(self) -> str:
        """The default agent's main session, where wakes and summaries go."""
        return main_session_key(self.default_agent)

    def check_agent(self, name: str, *, param: str = "agent") -> str:
        """The agent name if configured, else a 404 naming the field and the known agents."""
        if name not in self.kernel.agents:
            known = ", ".join(sorted(self.kernel.agents.agents)) or "(none)"
            raise ApiError(404, f"agent {name!r} does not exist; known agents: {known}", param=param,
                           code="agent_not_found")
        return name

    def check_session_key(self, key: str, *, param: str = "session_key", from_request: bool = False) -> str:
        """A valid key; keys sent by a client must also carry an allowed prefix, if any are set."""
        try:
            validate_session_key(key, param=param)
        except ApiError as exc:
            raise ApiError(400, f"{param}: {exc.message}", param=param, code=exc.code) from None
        prefixes = self.settings.session_key_prefixes
        if from_request and prefixes and not key.startswith(tuple(prefixes)):
            raise ApiError(400, f"{param} must start with one of: {', '.join(prefixes)}", param=param,
                           code="invalid_session_key")
        return key

    def rate_limit(self, hook: str, limit: int | None) -> None:
        """429 with ``Retry-After`` once ``hook`` had ``limit`` requests in the last minute."""
        limit = limit or self.settings.rate_limit_per_minute
        if limit is None:
            return
        wait = self.limiter.check(hook, limit)
        if wait is not None:
            retry = RateLimiter.retry_after_header(wait)
            raise ApiError(429, f"hook {hook!r} allows {limit} requests per minute; retry in {retry} s",
                           code="rate_limit_exceeded", headers={"Retry-After": retry})

    def system_event(self, text: str, *, source: str) -> Message:
        """A session system event carrying outside text as an untrusted block."""
        return Message(role="system", parts=[TextPart(wrap(text, source=source))])

    # ------------------------------------------------------------------ actions

    async def wake(self, text: str, mode: WakeMode, *, hook: str = "wake") -> str | None:
        """Queue ``text`` in the main session; with ``now`` also run a turn there.

        For ``now`` the event is the turn's input, so the kernel stores it in the
        transcript exactly once (before the answer). Returns the run id, if any.
        """
        event = self.system_event(text, source=f"hook {hook}")
        if mode == "next-heartbeat":
            await self.kernel.sessions.append(self.main_key, [event], principal=PRINCIPAL)
            log.info("hook %s: system event queued in %r", hook, self.main_key)
            return None
        turn = Turn(agent=self.default_agent, input=[event], system=self.settings.instructions,
                    session_key=self.main_key, surface="hooks", metadata={"hook": hook})
        run = self.kernel.runs.start(turn, background=True, principal=PRINCIPAL,
                                     timeout=self.settings.default_timeout_seconds)
        await self._track(run, AgentJob(hook=hook, name=hook, message=text, agent=self.default_agent,
                                        session_key=self.main_key, summary_to_main=False), wake_event=event)
        return run.id

    async def start_agent(self, job: AgentJob) -> str:
        """Start a background run for ``job``; return the kernel run's id."""
        message = Message(role="user", parts=[TextPart(wrap(job.message, source=f"hook {job.hook}"))])
        turn = Turn(
            agent=job.agent, input=[message], system=self.settings.instructions, session_key=job.session_key,
            model=job.model, surface="hooks", metadata={"hook": job.hook, **job.metadata},
        )
        timeout = job.timeout_seconds or self.settings.default_timeout_seconds
        run = self.kernel.runs.start(turn, background=True, principal=PRINCIPAL, timeout=timeout)
        await self._track(run, job)
        return run.id

    async def status(self, run_id: str) -> HookRunRecord | None:
        """The run's record; while it is still going, its live status and output so far."""
        record = await self.records.get(run_id)
        if record is None or record.finished_at is not None:
            return record
        live = self.kernel.runs.get(run_id)
        if live is not None:
            # Also covers the moment between the run ending and its follower writing the record.
            so_far = live.result()
            record.status = live.status
            record.output_text, record.output_truncated = clip_output(so_far.text)
            record.usage = _usage(so_far)
            if live.done:  # exactly what the follower is about to write
                record.error = _error(so_far)
                record.finished_at = live.finished_at
        return record

    # ------------------------------------------------------------------ following runs

    async def _track(self, run: Run, job: AgentJob, *, wake_event: Message | None = None) -> None:
        """Record the run and follow it; ``wake_event`` is the system event a ``now`` wake carries."""
        await self.records.create(HookRunRecord(
            run_id=run.id, hook=job.hook, name=display_name(job.name), agent=job.agent,
            session_key=job.session_key, status=run.status, created_at=time.time(),
        ))
        log.info("hook %s: run %s started (agent %r, session %r)", job.hook, run.id, job.agent, job.session_key)
        task = asyncio.get_running_loop().create_task(self._follow(run, job, wake_event), name=f"hooks-follow-{run.id}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(self, run: Run, job: AgentJob, wake_event: Message | None) -> None:
        try:
            result = await run.wait()
            if wake_event is not None and run.started_at is None:
                # Cancelled while waiting for the main session (e.g. at shutdown): the kernel only
                # stores the input of runs that started, so queue the event rather than lose it.
                # Under the session's lock: the turn it was waiting behind may still be saving
                # its items (a cancelled turn saves them before it lets go), and the event
                # belongs after them. Without the lock, on PostgreSQL, either could land first.
                async with self.kernel.sessions.lock(self.main_key, principal=PRINCIPAL):
                    await self.kernel.sessions.append(self.main_key, [wake_event], principal=PRINCIPAL)
                log.info("hook %s: run %s never started; its event was queued in %r", job.hook, run.id, self.main_key)
            took = (run.finished_at or time.time()) - run.created_at
            error = f" ({result.error.code}: {result.error.message})" if result.error is not None else ""
            log.info("hook %s: run %s %s after %.1f s%s", job.hook, run.id, result.status, took, error)
            await self.records.finish(run.id, status=result.status, output_text=result.text,
                                      usage=_usage(result), error=_error(result),
                                      finished_at=run.finished_at or time.time())
            if job.summary_to_main and job.session_key != self.main_key:
                await self._post_summary(summary_line(job.name, result), job.wake_mode)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hook run %s: could not record its result", run.id)

    async def _post_summary(self, line: str, wake_mode: WakeMode) -> None:
        # The summary quotes model output shaped by untrusted content: it stays wrapped too.
        if wake_mode == "now" and not self._stopping:
            try:
                await self.wake(line, "now", hook="summary")
                return
            except ApiError as exc:  # the provider is saturated: queue it instead of losing it
                log.warning("hook summary: could not start a main-session turn (%s); queued instead", exc.message)
        await self.kernel.sessions.append(self.main_key, [self.system_event(line, source="hook summary")],
                                           principal=PRINCIPAL)
