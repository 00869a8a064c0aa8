"""Where a limit domain's sends are recorded: the shared schedule every gateway instance paces against.

A reservation is one atomic step on the store's own clock. It finds the earliest start ``S`` that is

* no earlier than ``not_before_s`` from now and than the domain's theoretical arrival time (TAT), and
* at least one second after the ``limit``-th latest *arrival bound* in the log,

then records the send, before it leaves, with its arrival bound ``E = S + allowance_s`` (the latest
moment it can reach the broker's counter) and moves the TAT one interval on. The TAT is a grid (GCRA
with burst 0) that smooths the pace; it moves from where it was, not from a start the log pushed back,
so one late send delays one slot instead of the whole schedule (an idle domain's grid restarts at
now). The log alone makes the guarantee: any ``limit``
earlier sends whose arrivals could fall inside the one-second window ending at the new send's
arrival push it back, so no sliding second at the broker ever holds more than ``limit`` arrivals as
long as every send arrives within its allowance. A send that turns out later than its allowance
allowed for (the process stalled) is ``extend``-ed to its true bound. Entries leave the log once their
bound is a second old. A reserved slot that is never used only wastes a slot; one that was used is in
the log even if its process dies the next instant.

``reserve_run`` records several sends in one step, one after the other exactly as that many
reservations in a row would (each its own member, start and bound): a domain whose interval is far
shorter than a round trip to the store (limits off, a very fast key) then pays one round trip for a run of
slots instead of one per slot.

``RedisSlots`` keeps the log in Redis (one Lua script, Redis's clock; the reservations of one turn of the
event loop in one round trip), shared by every instance and handed over across rebalances, restarts and
crashes. ``MemorySlots`` is the same algorithm on a
``Clock``: the process's own guard while Redis is unreachable, and the store of unit tests.

The shared schedule of a domain is named by its key, not by the member's name (``shared_name``): the
provider and the appkey's fingerprint, as its token is. Every instance then paces one appkey as one,
whatever the pool calls it there (a member renamed in a rolling restart, the provider's own key moved
into the list); only a domain without a key keeps its own name.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from services.gateway.batching import CommandBatcher
from services.gateway.clock import Clock
from services.gateway.token_store import fingerprint

WINDOW_S = 1.0  # the brokers count a sliding second


def shared_name(domain: str, appkey: str | None) -> str:
    """The name a domain's schedule is shared under: ``KIS/<fingerprint>`` for a key, else the domain."""
    return domain if appkey is None else f"{domain.partition('/')[0]}/{fingerprint(appkey)}"


def log_key(key_prefix: str, name: str) -> str:
    """The Redis key of the send log shared under ``name`` (what ``apihub credentials`` counts)."""
    return f"{key_prefix}pace:{{{name}}}:log"


@dataclass(frozen=True)
class Reservation:
    """A recorded slot: wait ``wait_s`` from the store's now; ``start`` is on the store's clock (s).
    ``fresh``: the store had never seen the domain, or lost it (a Redis restarted empty), so sends other
    instances made in the last second may be missing from its log."""

    wait_s: float
    start: float
    member: str
    fresh: bool = False


@dataclass(frozen=True)
class Ask:
    """What a reservation asks for: the domain's pace and the send's allowance (seconds)."""

    domain: str
    interval_s: float
    limit: int
    allowance_s: float
    not_before_s: float  # from now: what the process's own log already requires
    member: str  # a unique name of the send in the log


class SlotStore(Protocol):
    """Records sends of limit domains and says when the next may leave."""

    async def reserve(self, ask: Ask) -> Reservation: ...

    async def reserve_run(self, ask: Ask, members: list[str]) -> list[Reservation]: ...

    async def extend(self, domain: str, member: str, arrival_by: float) -> None: ...


@dataclass
class _Log:
    tat: float = 0.0
    bounds: dict[str, float] = field(default_factory=dict)
    # (bound, member) of every bound ever set, oldest bound first: stale bounds leave from the front in
    # O(log n), not by a scan of the whole log per reservation (thousands of entries with limits off).
    # An entry whose member's bound was raised since is skipped when it comes up.
    expiry: list[tuple[float, str]] = field(default_factory=list)
    # The k-th latest bound by k, kept until a bound is set: admission and the pool estimate a domain's
    # next slot several times between two of its reservations. Dropping stale bounds cannot change it:
    # they are the oldest, and once the k-th latest itself goes fewer than k are left to ask about.
    latest: dict[int, float] = field(default_factory=dict)

    def set_bound(self, member: str, bound: float) -> None:
        self.bounds[member] = bound
        heapq.heappush(self.expiry, (bound, member))
        self.latest.clear()

    def drop_stale(self, before: float) -> None:
        expiry = self.expiry
        while expiry and expiry[0][0] <= before:
            bound, member = heapq.heappop(expiry)
            if self.bounds.get(member) == bound:
                del self.bounds[member]

    def kth_latest(self, k: int) -> float:
        """The ``k``-th latest bound in the log (it holds at least ``k``)."""
        if k not in self.latest:
            self.latest[k] = heapq.nlargest(k, self.bounds.values())[-1]
        return self.latest[k]


class MemorySlots:
    """The schedule in this process's memory, on ``clock.monotonic()``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._logs: dict[str, _Log] = {}

    async def reserve(self, ask: Ask) -> Reservation:
        """Record the next slot and return it."""
        return self.reserve_now(ask)

    async def reserve_run(self, ask: Ask, members: list[str]) -> list[Reservation]:
        """Record one slot per member, in order (``ask.member`` is not used)."""
        return [self.reserve_now(replace(ask, member=member)) for member in members]

    def reserve_now(self, ask: Ask) -> Reservation:
        """``reserve`` without a suspension point."""
        fresh = ask.domain not in self._logs
        log = self._logs.setdefault(ask.domain, _Log())
        now = self._clock.monotonic()
        start = max(now + max(0.0, ask.not_before_s), log.tat, self.window_start(ask.domain, ask.limit))
        log.tat = max(log.tat, now - ask.interval_s) + ask.interval_s
        log.set_bound(ask.member, start + ask.allowance_s)
        return Reservation(start - now, start, ask.member, fresh)

    def window_start(self, domain: str, limit: int) -> float:
        """The earliest start the log allows (after dropping bounds a second old)."""
        log = self._logs.get(domain)
        if log is None:
            return 0.0
        log.drop_stale(self._clock.monotonic() - WINDOW_S)
        if len(log.bounds) < limit:
            return 0.0
        return log.kth_latest(limit) + WINDOW_S

    def next_start(self, domain: str, limit: int) -> float:
        """When a reservation made now would start (clock seconds), without making one."""
        log = self._logs.get(domain)
        now = self._clock.monotonic()
        if log is None:
            return now
        return max(now, log.tat, self.window_start(domain, limit))

    async def extend(self, domain: str, member: str, arrival_by: float) -> None:
        """Raise a recorded send's arrival bound (never lowers it)."""
        log = self._logs.get(domain)
        if log is not None and member in log.bounds and arrival_by > log.bounds[member]:
            log.set_bound(member, arrival_by)

    def sends(self, domain: str) -> list[float]:
        """The arrival bounds in the log, oldest first (for tests and diagnostics)."""
        log = self._logs.get(domain)
        return sorted(log.bounds.values()) if log else []


# KEYS: TAT, log (sorted set member -> arrival bound, µs), the domain's mark (kept without expiry: gone
# only when Redis lost its data). ARGV: interval µs, limit, allowance µs, not-before µs from now, then one
# member per slot to record. Returns 1 when the mark was missing (then set) or 0, then {wait µs, start µs}
# per member, in order, on Redis's clock.
_RESERVE = """
local fresh = redis.call('SET', KEYS[3], '1', 'NX') and 1 or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - 1000000))
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local earliest = now + math.max(0, tonumber(ARGV[4]))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {fresh}
local last = now
for i = 5, #ARGV do
  local start = math.max(earliest, tat)
  local top = redis.call('ZREVRANGE', KEYS[2], limit - 1, limit - 1, 'WITHSCORES')
  if top[2] then start = math.max(start, tonumber(top[2]) + 1000000) end
  tat = math.max(tat, now - interval) + interval
  local bound = start + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[2], string.format('%.0f', bound), ARGV[i])
  last = math.max(last, tat, bound)
  out[#out + 1] = string.format('%.0f', start - now)
  out[#out + 1] = string.format('%.0f', start)
end
local ttl = math.floor((last - now) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return out
"""


class RedisSlots:
    """The schedule in Redis under ``<prefix>pace:{<domain>}:tat`` and ``:log``, with ``:seen`` marking a
    domain Redis has held (the domain in braces: a Redis Cluster hash tag), shared by every instance.

    Reservations made in the same turn of the event loop (the pacers of several pool members) go to
    Redis as one pipeline of script calls, with the arrival bounds extended meanwhile; each is still its
    own atomic step on Redis's clock.
    """

    def __init__(self, redis: Redis, *, key_prefix: str) -> None:
        self._prefix = f"{key_prefix}pace:"
        self._script = redis.register_script(_RESERVE)
        self._batches = CommandBatcher(redis)

    def _keys(self, domain: str) -> list[str]:
        # the name is the hash tag: one script reads all three keys, so on Redis Cluster they share a slot
        return [f"{self._prefix}{{{domain}}}:{part}" for part in ("tat", "log", "seen")]

    async def reserve(self, ask: Ask) -> Reservation:
        """Record the next slot in Redis and return it (raises ``RedisError``)."""
        (reservation,) = await self.reserve_run(ask, [ask.member])
        return reservation

    async def reserve_run(self, ask: Ask, members: list[str]) -> list[Reservation]:
        """Record one slot per member in one atomic step (``ask.member`` is not used; raises
        ``RedisError``)."""
        keys = self._keys(ask.domain)
        args: list[str | int] = [
            _us(ask.interval_s),
            ask.limit,
            _us(ask.allowance_s),
            _us(ask.not_before_s),
            *members,
        ]
        try:
            reply = await self._batches.run(("EVALSHA", self._script.sha, len(keys), *keys, *args))
        except NoScriptError:  # Redis lost its scripts (a restart): the call loads it, then runs it
            reply = await self._script(keys=keys, args=args)
        return [
            Reservation(int(reply[2 * i + 1]) / 1e6, int(reply[2 * i + 2]) / 1e6, member, reply[0] == 1)
            for i, member in enumerate(members)
        ]

    async def extend(self, domain: str, member: str, arrival_by: float) -> None:
        """Raise a recorded send's arrival bound (``ZADD XX GT``: never adds, never lowers); with the turn's
        reservations (a contended host makes many sends late, each extended)."""
        await self._batches.run(("ZADD", self._keys(domain)[1], "XX", "GT", _us(arrival_by), member))


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
