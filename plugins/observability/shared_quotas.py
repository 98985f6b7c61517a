"""Per-key limits that hold across processes sharing one PostgreSQL store (replicas,
``kernel serve --workers N``): the same answers as :class:`Quotas`, counted in the store.

The kernel decides about a run synchronously (``runs.start`` is called by endpoint
plugins without awaiting, and must refuse with a 429 before anything is sent), so the
store cannot be asked at that moment. It is asked one step earlier instead: the kernel
awaits :meth:`SharedQuotas.prepare` (through the observer seam's ``prepare_request``)
for every HTTP request of a key with limits, before the request's first synchronous
check. That one round trip (:func:`quota_store.count_request`, one statement):

* counts the request against ``requests_per_minute``, atomically across processes (the
  answer, admitted or refused, is kept in the request's context for ``check_request``);
* for a ``POST`` of a key with ``max_concurrent_runs``, claims a concurrency slot if one
  is free: a run the request starts takes it (``admit``); a request that ends without
  starting one gives it back (``finish``). No slot free: the request goes on, and a run it
  tries to start is refused, exactly as the store's count said. Only ``POST`` claims (the
  endpoints that start runs are POSTs), so a ``GET`` never holds a slot;
* reads the key's row (buckets, runs in progress, budget) into this process's view.

``tokens_per_minute`` and ``budget_tokens`` need the run's estimate, known only when the
run is admitted: they are checked against the view the round trip just read, then the
charge is written (one statement, not awaited by the request; settled the same way when
the run ends). Every write is an atomic increment, so nothing is lost, but two processes
admitting runs of one key within the same few milliseconds may both pass a check only one
of them would have passed alone: the overshoot is bounded by the estimates of the runs
admitted at that moment, and the bucket then stays in debt until it refills (the same
kind of overshoot settling already allows: a run may use more than its estimate).
Requests per minute and concurrent runs are exact: the store decides.

Runs started without an HTTP request (a WebSocket message) are decided on this process's
view (refreshed by every answer) and written the same way, so across processes they are
approximate like token limits. When the store does not answer, requests are decided the
same way (fail open, logged): a limiter outage does not take the gateway down.

A process's own writes to one key land before its next round trip for that key reads it
(the round trip waits for them), so one client talking to one process sees exactly what
one process would show. Keys without limits never touch the store.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from kernel import Observer, RequestInfo
from kernel.config import ApiKey
from kernel.errors import ApiError
from plugins.observability import quota_store
from plugins.observability.quotas import (
    Bucket,
    KeyState,
    Quotas,
    Reservation,
    check_budget,
    check_tokens,
    concurrency_refused,
    period_bounds,
    requests_refused,
)

if TYPE_CHECKING:
    from kernel.store import Store
    from kernel.store.leases import Leases

log = logging.getLogger("plugins.observability")

# Where a request's round trip leaves its answer: the context (for the synchronous checks
# of the same request) and the request's observer scratch space (to give an unused slot back).
TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("observability_quota_ticket", default=None)
TICKET_KEY = "observability.quota_ticket"
# A failed write (the store unreachable) is retried after these pauses, then dropped (logged).
RETRY_DELAYS = (0.05, 0.25, 1.0, 2.0, 5.0)
WARN_EVERY_SECONDS = 60.0


@dataclass(slots=True)
class Ticket:
    """What the store answered for one request of a limited key."""

    principal: str
    refusal: ApiError | None = None  # requests_per_minute said no
    asked_slot: bool = False  # the round trip tried to claim a concurrency slot
    slot: str | None = None  # the slot it claimed, until a run takes it or the request ends
    done: bool = False


class SharedQuotas(Quotas):
    """:class:`Quotas` counted in a shared PostgreSQL store; ``keys`` is this process's view."""

    shared = True

    def __init__(self, keys: dict[str, ApiKey], store: Store, leases: Leases,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(keys, clock)
        self.store = store
        self.leases = leases
        self._versions: dict[str, int] = dict.fromkeys(self.keys, -1)
        self._rows: dict[str, Any] = {}  # the newest row the store answered with, per key
        self._unanswered: dict[str, list[Callable[[KeyState], None]]] = {}  # changes whose write is out
        self._writes: dict[str, set[asyncio.Task[None]]] = {}
        self._warned_at = float("-inf")

    def with_clock(self, clock: Callable[[], float]) -> SharedQuotas:
        return SharedQuotas({name: state.limits for name, state in self.keys.items()}, self.store, self.leases, clock)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, tokens_since: Callable[[str, float], Awaitable[int]]) -> None:
        """Make every limited key's row (a new budget period starts from the usage ledger),
        read them, free slots of processes that are gone, and have the leader keep doing so."""
        now = self.clock()
        for principal, state in self.keys.items():
            period = ""
            seed = 0
            if state.limits.budget_tokens is not None:
                period, start, _ = period_bounds(state.limits.budget_period, now)
                seed = await tokens_since(principal, start)
            await quota_store.ensure(self.store, principal, period, seed)
            row = await quota_store.read(self.store, principal)
            if row is not None:
                self._apply(principal, state, row)
        await self.reap()
        self.leases.add_reaper("quota slots", self.reap)

    async def stop(self) -> None:
        """Let the writes in flight land, then give back the slots this process still holds."""
        pending = [task for tasks in self._writes.values() for task in tasks]
        if pending:
            await asyncio.wait(pending, timeout=5)
        try:
            await quota_store.free_slots(self.store, "s.instance_id = ?", (self.leases.instance_id,))
        except Exception:  # they are freed when this process's lease expires
            log.exception("could not give back this process's concurrency slots")

    async def reap(self) -> int:
        """Free the concurrency slots of processes whose lease expired (a lease reaper)."""
        where, params = self.leases.orphaned("s.instance_id")
        freed = await quota_store.free_slots(self.store, where, params)
        if freed:
            log.warning("freed %d concurrency slot(s) held by a process that stopped (its lease expired)", freed)
        return 0  # nothing was failed (what the leases' log line counts)

    # ------------------------------------------------------------------ the round trip

    async def prepare(self, info: RequestInfo) -> None:
        """Count the request in the store and read the key's row (see the module docstring)."""
        principal = info.principal
        state = self.keys.get(principal) if principal else None
        if state is None or principal is None:
            return
        limits = state.limits
        claim = limits.max_concurrent_runs if info.method == "POST" else None
        pending = self._writes.get(principal)
        if pending and (state.tokens is not None or limits.budget_tokens is not None
                        or (claim is not None and state.active + len(pending) >= claim)):
            # This process's earlier writes land first, so it never decides behind itself: a
            # bucket or budget it reads, or a slot it freed when the key is at its cap. (Far
            # from the cap, a release still on its way cannot change the claim: no wait.)
            await asyncio.wait(list(pending))
        now = self.clock()
        slot = uuid.uuid4().hex
        try:
            if limits.requests_per_minute is None and claim is None:
                row = await quota_store.read(self.store, principal)
            else:
                row = await quota_store.count_request(self.store, principal, now, limits.requests_per_minute,
                                                      claim, slot, self.leases.instance_id)
        except Exception as exc:
            self._warn("could not count a request of key %r in the store (%s); deciding on this process's "
                       "view until it answers", principal, exc)
            return
        if row is None:  # the row was deleted under us: make it again; this request is decided locally
            await quota_store.ensure(self.store, principal, "", 0)
            return
        self._apply(principal, state, row)
        ticket = Ticket(principal, asked_slot=claim is not None)
        if limits.requests_per_minute is not None and not row["request_ok"]:
            bucket = Bucket(limits.requests_per_minute, now)
            bucket.level, bucket.at = float(row["requests_level"]), float(row["requests_at"])
            ticket.refusal = requests_refused(principal, bucket, now)
        if claim is not None and row["claimed"]:
            ticket.slot = slot
        TICKET.set(ticket)
        info.state[TICKET_KEY] = ticket

    def finish(self, ticket: Ticket) -> None:
        """The request ended: give back a slot it claimed that no run took."""
        ticket.done = True
        if ticket.slot is None:
            return
        slot, ticket.slot = ticket.slot, None
        self._change(ticket.principal, _free_slot,
                     partial(quota_store.settle, self.store, ticket.principal, self.clock(), slot=slot))

    # ------------------------------------------------------------------ the synchronous checks

    def check_request(self, principal: str | None) -> None:
        state = self.keys.get(principal) if principal else None
        if state is None or state.requests is None or principal is None:
            return
        ticket = TICKET.get()
        if ticket is not None and ticket.principal == principal:
            if ticket.refusal is not None:
                raise ticket.refusal
            return
        # Not counted by a round trip: a run started by a WebSocket message, or the store did not answer.
        now = self.clock()
        bucket = state.requests
        if bucket.available(now) < 1:
            raise requests_refused(principal, bucket, now)
        self._change(principal, partial(_take_request, now=now),
                     partial(quota_store.charge, self.store, principal, now, requests=bucket.capacity))

    def admit(self, principal: str | None, estimate: int) -> Reservation | None:
        state = self.keys.get(principal) if principal else None
        if state is None or principal is None:
            return None
        now = self.clock()
        limits = state.limits
        ticket = TICKET.get()
        if ticket is not None and (ticket.principal != principal or ticket.done):
            ticket = None
        slot: str | None = None
        claimed = False  # the slot comes from the round trip (already counted in the store)
        if limits.max_concurrent_runs is not None:
            if ticket is not None and ticket.asked_slot:
                if ticket.slot is None:  # the store said every slot was taken
                    raise concurrency_refused(principal, limits.max_concurrent_runs)
                slot, claimed = ticket.slot, True
            else:
                if state.active >= limits.max_concurrent_runs:
                    raise concurrency_refused(principal, limits.max_concurrent_runs)
                slot = uuid.uuid4().hex
        # On a 429 here a slot the round trip claimed goes back when the request ends (finish).
        if state.tokens is not None:
            check_tokens(principal, state.tokens, estimate, now)
        period = check_budget(principal, state, estimate, now) if limits.budget_tokens is not None else ""
        if claimed:
            ticket.slot, ticket.asked_slot = None, False  # type: ignore[union-attr]  # a second run decides on the view
        late_slot = slot if slot is not None and not claimed else None
        if state.tokens is not None or period or late_slot is not None:
            self._change(principal, partial(_charge, now=now, estimate=estimate, period=period,
                                            slot=late_slot is not None),
                         partial(quota_store.charge, self.store, principal, now,
                                 tokens=(state.tokens.capacity, estimate) if state.tokens is not None else None,
                                 budget=(period, estimate) if period else None,
                                 slot=(late_slot, self.leases.instance_id) if late_slot is not None else None))
        return Reservation(principal, estimate, period, slot)

    def settle(self, reservation: Reservation, actual: int) -> None:
        principal = reservation.principal
        state = self.keys.get(principal)
        if state is None:
            return
        if reservation.slot is None and state.tokens is None and not reservation.period:
            return  # requests_per_minute only: nothing to settle
        now = self.clock()
        difference = actual - reservation.estimate
        self._change(principal, partial(_settle, now=now, reservation=reservation, difference=difference),
                     partial(quota_store.settle, self.store, principal, now, slot=reservation.slot,
                             tokens=(state.tokens.capacity, difference) if state.tokens is not None else None,
                             budget=(reservation.period, difference) if reservation.period else None))

    # ------------------------------------------------------------------ the view and the writes

    def _apply(self, principal: str, state: KeyState, row: Any) -> None:
        """This process's view of a key: the newest row the store answered with, plus the
        changes this process made since whose writes have not answered yet (replayed with the
        same arithmetic as the store's, so the view never falls behind this process's own work)."""
        if row is not None and int(row["version"]) >= self._versions.get(principal, -1):
            self._versions[principal] = int(row["version"])
            self._rows[principal] = row
        base = self._rows.get(principal)
        if base is not None:
            for bucket, level, at in ((state.requests, base["requests_level"], base["requests_at"]),
                                      (state.tokens, base["tokens_level"], base["tokens_at"])):
                if bucket is not None:  # a column never written is a full bucket
                    bucket.level = float(bucket.capacity) if level is None else float(level)
                    bucket.at = 0.0 if at is None else float(at)
            state.active = int(base["active"])
            state.budget_period = base["budget_period"]
            state.budget_used = int(base["budget_used"])
        for effect in self._unanswered.get(principal, ()):
            effect(state)

    def _change(self, principal: str, effect: Callable[[KeyState], None],
                statement: Callable[[], Awaitable[Any]]) -> None:
        """Make ``effect`` on this process's view now, and write it to the store in the
        background (``statement()``, again if the store fails)."""
        state = self.keys[principal]
        effect(state)
        self._unanswered.setdefault(principal, []).append(effect)
        task = asyncio.get_running_loop().create_task(self._write(principal, effect, statement))
        tasks = self._writes.setdefault(principal, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _write(self, principal: str, effect: Callable[[KeyState], None],
                     statement: Callable[[], Awaitable[Any]]) -> None:
        attempts = iter(RETRY_DELAYS)
        row = None
        try:
            while True:
                try:
                    row = await statement()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = next(attempts, None)
                    if delay is None:
                        log.error("could not write a quota change of key %r to the store; it is lost (%s)",
                                  principal, exc)
                        break
                    self._warn("a quota change of key %r did not reach the store (%s); retrying", principal, exc)
                    await asyncio.sleep(delay)
        finally:
            unanswered = self._unanswered.get(principal, [])
            if effect in unanswered:
                unanswered.remove(effect)
            self._apply(principal, self.keys[principal], row)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(message, *args)


# The changes a process makes to its view, in the store's arithmetic (quota_store): kept
# until the write answers, and replayed on every newer answer until then.

def _take_request(state: KeyState, *, now: float) -> None:
    if state.requests is not None:
        state.requests.take(1, now)


def _charge(state: KeyState, *, now: float, estimate: int, period: str, slot: bool) -> None:
    if state.tokens is not None:
        state.tokens.take(estimate, now)
    if period:
        if state.budget_period == period:
            state.budget_used += estimate
        elif state.budget_period < period:
            state.budget_period, state.budget_used = period, estimate
    if slot:
        state.active += 1


def _settle(state: KeyState, *, now: float, reservation: Reservation, difference: int) -> None:
    if reservation.slot is not None:
        state.active = max(0, state.active - 1)
    Quotas.settle_charge(state, reservation, difference, now)


def _free_slot(state: KeyState) -> None:
    state.active = max(0, state.active - 1)


class QuotaSync(Observer):
    """The shared quotas' part of the observer seam: the round trip before a request of a
    limited key, the unused slot given back after it. Added only when the store is shared
    and a key has limits (so it costs nothing otherwise)."""

    def __init__(self, quotas: Callable[[], Quotas]) -> None:
        self.quotas = quotas  # read at each call: tests swap the observer's quotas for one on their clock

    async def prepare_request(self, info: RequestInfo) -> None:
        quotas = self.quotas()
        if isinstance(quotas, SharedQuotas):
            await quotas.prepare(info)

    def request_finished(self, info: RequestInfo) -> None:
        ticket = info.state.get(TICKET_KEY)
        quotas = self.quotas()
        if ticket is not None and isinstance(quotas, SharedQuotas):
            quotas.finish(ticket)
