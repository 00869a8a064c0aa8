"""Pacing of one limit domain: ``limit`` sends per sliding second at the broker, with room for jitter.

The broker counts arrivals in a sliding second; each send reaches it after an unknown delay of at most
the jitter budget ``J`` (see ``jitter``). The limiter spaces slots ``(1 s + J) / rate`` apart (GCRA,
burst 0) and the slot store holds every send back until the ``limit``-th latest one's arrival bound is a
second old, so any ``limit + 1`` sends reach the broker at least a second apart (see ``slots``).

Every send is recorded in the shared store (Redis) before it leaves, and in this process's own
``MemorySlots`` too. While Redis is unreachable the local log paces this process alone, to its quota of
the limit (``quota``: the instances serving share the limit out), and only once every slot reserved in
Redis before it failed has left the broker's window (``lost_quiet_s``); after Redis answers again it
keeps to its quota for ``QUOTA_HOLD_S`` more, until no other instance's unrecorded send can share a
window with what Redis now schedules. One limiter per domain serves ordinary calls and token calls
alike. Throttle answers from the broker halve the pace (AIMD, down to a quarter); each success wins back
a little.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from services.gateway.clock import Clock
from services.gateway.jitter import JitterBudget
from services.gateway.metrics import PACING_JITTER, SEND_LAG, SENDS_LATE, child
from services.gateway.quota import GroupQuota
from services.gateway.slots import WINDOW_S, Ask, MemorySlots, Reservation, SlotStore
from services.logs import log_event

logger = logging.getLogger(__name__)

MIN_RATE_FACTOR = 0.25
RECOVERY_PER_SUCCESS = 0.02
#: At most one ``limiter.send_late`` line per domain in this many seconds (a contended host makes many late
#: sends; each is counted in ``apihub_sends_late_total``, and the line says how many since the last one).
LATE_LOG_EVERY_S = 10.0
#: How far ahead of its start a slot may be reserved in Redis: one at a time per instance and domain (a
#: run only when slots come milliseconds apart), so at most about a second for the instances of a key.
RESERVED_AHEAD_S = WINDOW_S
#: After Redis answers again, the quota holds this long: another instance may still send slots it
#: reserved locally before it noticed (its quiet time or one quota interval ahead, about two seconds),
#: and those must leave the broker's window before Redis's schedule alone counts.
QUOTA_HOLD_S = RESERVED_AHEAD_S + 2 * WINDOW_S
#: An instance whose quota of a key is 0 asks again this often whether Redis is back.
QUOTA_RETRY_S = 0.5


@dataclass
class Slot:
    """One recorded send: it may leave at ``start_s`` (this process's monotonic clock)."""

    start_s: float
    earliest_s: float  # the earliest local reading the store's start can stand for (lag is measured from it)
    allowance_s: float
    member: str
    shared_start: float | None  # the start on the shared store's clock, None when recorded locally only
    lag_s: float | None = None  # measured once the headers left


@dataclass(frozen=True)
class _Pace:
    """What the process's own log keeps to: slots ``interval_s`` apart, ``limit`` a second, none before
    ``floor_s`` from now."""

    interval_s: float
    limit: int
    floor_s: float


@dataclass
class _LateSends:
    """Late sends of one domain since its last ``limiter.send_late`` line."""

    count: int = 0
    worst_s: float = 0.0
    logged_s: float | None = None


class DomainLimiter:
    """Reserves slots of one limit domain across every gateway instance."""

    def __init__(
        self,
        domain: str,
        rate_per_s: float,
        *,
        jitter: JitterBudget,
        clock: Clock,
        shared: SlotStore | None,
        shared_name: str | None = None,
        quota: GroupQuota | None = None,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.domain = domain
        self.shared_name = shared_name or domain  # its schedule's name in both stores (slots.py)
        self.rate_per_s = rate_per_s
        self.limit = max(1, math.floor(rate_per_s))
        self.rate_factor = 1.0
        self.jitter = jitter
        self._clock = clock
        self._shared = shared
        self._local = MemorySlots(clock)
        self._members = (f"{secrets.token_hex(4)}:{n}" for n in itertools.count())
        self._quota = quota or GroupQuota()
        self._lost_at: float | None = None  # when Redis first failed in the current outage
        self._hold_until = 0.0  # the quota holds until then after Redis answered again
        self._extending: set[asyncio.Task[None]] = set()
        self._late = _LateSends()

    @property
    def interval_s(self) -> float:
        """Seconds between slots now: ``(1 s + J_effective) / rate``, slowed after throttle answers."""
        return (1.0 + self.jitter.allowance_s()) / (self.rate_per_s * self.rate_factor)

    def next_slot_in_s(self) -> float:
        """How long a reservation made now would wait, as far as this process knows."""
        now = self._clock.monotonic()
        pace = self._pace(now, self.interval_s)
        if pace is None:
            return QUOTA_RETRY_S
        return max(0.0, self._local.next_start(self.shared_name, pace.limit) - now, pace.floor_s)

    @property
    def limited(self) -> bool:
        """True while this process keeps to its quota (Redis lost, or back for less than the hold)."""
        return self._lost_at is not None or self._clock.monotonic() < self._hold_until

    def lost_quiet_s(self) -> float:
        """How long after Redis failed nothing leaves: slots other instances reserved there before (up to
        about a second ahead) must reach the broker and leave its window first. An instance alone in the
        group knows every send from its own log and waits for none."""
        if self._quota.serving == 1:
            return 0.0
        return RESERVED_AHEAD_S + WINDOW_S + self.jitter.allowance_s()

    def _pace(self, now: float, interval_s: float) -> _Pace | None:
        """The pace the local log keeps to now: the whole limit, or the quota while ``limited`` (None:
        a quota of 0, nothing may leave)."""
        if not self.limited:
            return _Pace(interval_s, self.limit, 0.0)
        quota = self._quota.of(self.limit)
        if quota == 0:
            return None
        floor = 0.0 if self._lost_at is None else self._lost_at + self.lost_quiet_s() - now
        return _Pace(interval_s * self.limit / quota, quota, max(0.0, floor))

    async def reserve(self, not_before_s: float = 0.0) -> Slot:
        """Record the next slot, no earlier than ``not_before_s`` from now, in the shared store (and
        locally) and return it; never raises for Redis."""
        (slot,) = await self.reserve_run(1, not_before_s)
        return slot

    async def reserve_run(self, count: int, not_before_s: float = 0.0) -> list[Slot]:
        """Record the next ``count`` slots in one step (one round trip to the shared store), as ``count``
        reservations in a row would (fewer while ``limited``: one); never raises for Redis."""
        while not (slots := await self._reserve_run(count, not_before_s)):
            await self._clock.sleep(QUOTA_RETRY_S)  # a quota of 0: ask again later
        return slots

    async def _reserve_run(self, count: int, not_before_s: float) -> list[Slot]:
        """``reserve_run`` once; [] when this process may send nothing now (a quota of 0)."""
        allowance = self.jitter.allowance_s()
        child(PACING_JITTER, self.domain).set(allowance)
        interval = (1.0 + allowance) / (self.rate_per_s * self.rate_factor)
        before = self._clock.monotonic()
        pace = self._pace(before, interval)
        if pace is None and self._lost_at is None:
            return []  # held at a quota of 0 after Redis came back: nothing to ask it
        members = [next(self._members) for _ in range(1 if self.limited else max(1, count))]
        own = pace or _Pace(interval, self.limit, 0.0)  # a quota of 0 while Redis is lost: asks if it is back
        local_wait = max(
            self._local.next_start(self.shared_name, own.limit) - before, not_before_s, own.floor_s
        )
        # Redis schedules at the key's whole pace; this process's own log holds it to its pace besides.
        ask = Ask(self.shared_name, interval, self.limit, allowance, max(0.0, local_wait), members[0])
        shared: list[Reservation] | None = None
        if self._shared is not None:
            try:
                shared = await self._shared.reserve_run(ask, members)
            except (RedisError, OSError) as exc:
                self._note_shared(exc)
            else:
                self._note_shared(None, fresh=shared[0].fresh)
        after = self._clock.monotonic()
        if shared is None:  # the own log alone: at the quota (and after the quiet) if Redis is lost
            pace = self._pace(after, interval)
            members = members[: 1 if self.limited else len(members)]
        if pace is None:
            return []  # a quota of 0 (a slot Redis just gave, if it answered, goes unused)
        local_ask = replace(ask, interval_s=pace.interval_s, limit=pace.limit)
        slots = []
        for i, member in enumerate(members):
            wait = shared[i].wait_s if shared is not None else max(0.0, not_before_s, pace.floor_s)
            recorded = self._local.reserve_now(replace(local_ask, member=member, not_before_s=wait))
            start = after + recorded.wait_s  # the store's start can stand for a reading up to `after + wait`
            earliest = before + (wait if shared is not None else recorded.wait_s)
            slots.append(Slot(start, earliest, allowance, member, shared[i].start if shared else None))
        return slots

    def usable(self, slot: Slot) -> bool:
        """Whether a slot reserved ahead may still be used now: its send would reach the broker within
        the arrival bound it was recorded with (a slot kept too long is wasted, never sent late)."""
        return self._clock.monotonic() - slot.start_s <= slot.allowance_s - self.jitter.setting_s

    async def postpone(self, slot: Slot, start_s: float) -> None:
        """Move a reserved, unsent slot later, to ``start_s``: its arrival bound moves with it, locally
        and in the shared store, before anything is sent (a slot's send waiting for another domain's)."""
        delta = start_s - slot.start_s
        if delta <= 0:
            return
        slot.start_s += delta
        slot.earliest_s += delta
        await self._local.extend(self.shared_name, slot.member, slot.start_s + slot.allowance_s)
        if self._shared is not None and slot.shared_start is not None:
            slot.shared_start += delta
            try:
                await self._shared.extend(self.shared_name, slot.member, slot.shared_start + slot.allowance_s)
            except (RedisError, OSError) as exc:
                self._note_shared(exc)

    async def acquire(self) -> Slot:
        """Reserve a slot and sleep until it starts."""
        slot = await self.reserve()
        await self._clock.sleep(slot.start_s - self._clock.monotonic())
        return slot

    async def sent(self, slot: Slot) -> None:
        """The slot's request is leaving (may be told more than once; the latest moment counts): measure
        the own lag and, if it ran later than its allowance, extend its arrival bound."""
        lag = max(0.0, self._clock.monotonic() - slot.earliest_s)
        first = slot.lag_s is None
        if not first and lag <= (slot.lag_s or 0.0):
            return
        slot.lag_s = lag
        if first:
            self.jitter.observe(lag)
            child(SEND_LAG, self.domain).observe(lag)
        overrun = lag + self.jitter.setting_s - slot.allowance_s
        if overrun <= 0:
            return
        await self._local.extend(self.shared_name, slot.member, slot.start_s + overrun + slot.allowance_s)
        if self._shared is not None and slot.shared_start is not None:
            # In the background: the request must not wait for Redis; the bound matters to reservations
            # a second from now, long after this write lands.
            bound = slot.shared_start + lag + self.jitter.setting_s
            task = asyncio.create_task(self._extend_shared(slot.member, bound))
            self._extending.add(task)
            task.add_done_callback(self._extending.discard)
        if lag > self.jitter.setting_s:  # the own lag alone used up the budget: worth counting
            self._note_late(lag, slot.allowance_s)

    def _note_late(self, lag_s: float, allowance_s: float) -> None:
        child(SENDS_LATE, self.domain).inc()
        late = self._late
        late.count += 1
        late.worst_s = max(late.worst_s, lag_s)
        now = self._clock.monotonic()
        if late.logged_s is not None and now - late.logged_s < LATE_LOG_EVERY_S:
            return
        log_event(
            logger,
            "limiter.send_late",
            logging.WARNING,
            domain=self.domain,
            lag_ms=round(lag_s * 1000, 1),
            allowance_ms=round(allowance_s * 1000, 1),
            late_sends=late.count,
            worst_lag_ms=round(late.worst_s * 1000, 1),
        )
        self._late = _LateSends(logged_s=now)

    async def _extend_shared(self, member: str, bound: float) -> None:
        assert self._shared is not None
        try:
            await self._shared.extend(self.shared_name, member, bound)
        except (RedisError, OSError) as exc:
            self._note_shared(exc)

    def throttled(self) -> None:
        """The broker said slow down: halve the pace (down to a quarter of nominal)."""
        self.rate_factor = max(MIN_RATE_FACTOR, self.rate_factor * 0.5)
        log_event(logger, "limiter.slowed", logging.WARNING, domain=self.domain, rate_factor=self.rate_factor)

    def succeeded(self) -> None:
        """A call went through: win back a little of the nominal pace."""
        if self.rate_factor < 1.0:
            self.rate_factor = min(1.0, self.rate_factor + RECOVERY_PER_SUCCESS)

    def _note_shared(self, exc: Exception | None, *, fresh: bool = False) -> None:
        """Redis failed (``exc``) or answered; ``fresh``: it answered without the domain's mark, so it lost
        its data, perhaps while this process sent nothing and saw no failure (or never held the domain):
        the quota holds as after an outage, while others' unrecorded sends leave the window."""
        if exc is None and not fresh and self._lost_at is None:
            return  # the usual answer: nothing to note
        now = self._clock.monotonic()
        if fresh and exc is None and self._quota.serving > 1:
            self._hold_until = max(self._hold_until, now + QUOTA_HOLD_S)
        if exc is not None and self._lost_at is None:
            self._lost_at = now
            log_event(
                logger,
                "limiter.redis_unavailable",
                logging.WARNING,
                domain=self.domain,
                error=str(exc),
                quota=self._quota.of(self.limit),
                quiet_ms=round(self.lost_quiet_s() * 1000),
            )
        elif exc is None and self._lost_at is not None:
            self._lost_at = None
            self._hold_until = now + QUOTA_HOLD_S
            log_event(
                logger, "limiter.redis_back", domain=self.domain, quota_hold_ms=round(QUOTA_HOLD_S * 1000)
            )
