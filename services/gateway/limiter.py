"""Exact pacing per limit domain: GCRA with burst 0 and a safety margin, shared through Redis.

Each domain has a theoretical arrival time (TAT). A reservation starts at ``max(now, TAT)`` and moves the
TAT one emission interval, ``1 / (rate * (1 - margin))`` seconds, later; with burst 0 no two calls are
ever closer than that at the gateway, which leaves the margin for jitter on the way to the broker.

The TAT lives in Redis and is moved by one Lua script using Redis's own clock, so every gateway instance,
a new owner after a rebalance and a restarted process continue the same schedule instead of bursting on
top of the old one. A local pacer guards the process as well (and alone while Redis is unreachable).
Throttle answers from the broker halve the domain's rate (AIMD); each success wins back a little.

Spacing by TAT alone lets a late slot (event-loop jitter) land close to the next one. The brokers count
a sliding one-second window, so the limiter also logs the actual send times of every instance in a Redis
sorted set and holds a call while ``floor(rate)`` calls were sent within the last second plus a guard
(this process's own log stands in while Redis is unreachable). A send is recorded when it is granted
and moved to the moment its headers actually left (``sent``), so an event-loop stall between the two
cannot bunch arrivals at the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.logs import log_event

logger = logging.getLogger(__name__)

# KEYS[1] = TAT key; ARGV[1] = interval in µs; ARGV[2] = longest acceptable wait in µs (-1: any).
# Returns {wait_us, accepted}: the caller sleeps wait_us, or is refused (accepted = 0) untouched.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, tat)
local wait = start - now
local max_wait = tonumber(ARGV[2])
if max_wait >= 0 and wait > max_wait then
  return {wait, 0}
end
local next_tat = start + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 60000)
return {wait, 1}
"""

# KEYS[1] = sorted set of send times (µs); ARGV = window µs, limit, unique member.
# Records the send and returns 0 when the window has room, else the µs until its oldest send leaves it.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# KEYS[1] = the same sorted set; ARGV[1] = a member: move its send time to now (the request really left).
_MOVE = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])), ARGV[1])
return 0
"""

MIN_RATE_FACTOR = 0.25
RECOVERY_PER_SUCCESS = 0.02


@dataclass(frozen=True)
class SendTicket:
    """One granted send: its local log entry and its member in the shared log (None without Redis)."""

    entry: list[float]
    member: str | None


class Pacer:
    """One process's view of a domain's TAT (monotonic seconds)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._tat_s = 0.0

    def wait_s(self, now_s: float | None = None) -> float:
        """How long a reservation made now would wait."""
        now = time.monotonic() if now_s is None else now_s
        return max(0.0, self._tat_s - now)

    def push_back(self, start_s: float) -> None:
        """Make sure the next slot is no earlier than one interval after ``start_s``."""
        self._tat_s = max(self._tat_s, start_s + self.interval_s)


class DomainLimiter:
    """Paces one limit domain at ``rate_per_s`` across all gateway instances."""

    def __init__(
        self,
        domain: str,
        rate_per_s: float,
        *,
        redis: Redis | None,
        key_prefix: str = "apihub:",
        safety_margin: float = 0.02,
        window_guard_s: float = 0.02,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0 <= safety_margin < 1:
            raise ValueError("safety_margin must be in [0, 1)")
        self.domain = domain
        self.base_interval_s = 1.0 / (rate_per_s * (1.0 - safety_margin))
        self.rate_factor = 1.0
        self._redis = redis
        self._key = f"{key_prefix}gcra:{domain}"
        self._pacer = Pacer(self.base_interval_s)
        self._script = redis.register_script(_GCRA) if redis is not None else None
        self._window_script = redis.register_script(_WINDOW) if redis is not None else None
        self._move_script = redis.register_script(_MOVE) if redis is not None else None
        self._window_key = f"{key_prefix}sent:{domain}"
        self._sends = 0
        self._redis_down = False
        self._window_s = 1.0 + window_guard_s
        self._window_limit = max(1, math.floor(rate_per_s))
        self._sent: deque[list[float]] = deque()  # [monotonic send time], moved by ``sent``

    @property
    def interval_s(self) -> float:
        """The current emission interval, slowed down after throttle answers."""
        return self.base_interval_s / self.rate_factor

    def local_wait_s(self) -> float:
        """How long a reservation made now would wait in this process."""
        return self._pacer.wait_s()

    async def reserve(self, max_wait_s: float | None = None) -> float | None:
        """Reserve the next slot; returns seconds to wait before the call, or None if over ``max_wait_s``."""
        interval = self.interval_s
        self._pacer.interval_s = interval
        now = time.monotonic()
        wait_s = self._pacer.wait_s(now)
        if max_wait_s is not None and wait_s > max_wait_s:
            return None
        if self._script is not None:
            limit_us = -1 if max_wait_s is None else int(max_wait_s * 1_000_000)
            try:
                shared_wait_us, accepted = await self._script(
                    keys=[self._key], args=[int(interval * 1e6), limit_us]
                )
            except (RedisError, OSError) as exc:
                if not self._redis_down:
                    log_event(
                        logger,
                        "limiter.redis_unavailable",
                        logging.WARNING,
                        domain=self.domain,
                        error=str(exc),
                    )
                self._redis_down = True
            else:
                self._redis_down = False
                if not accepted:
                    return None
                wait_s = max(wait_s, int(shared_wait_us) / 1_000_000)
        self._pacer.push_back(now + wait_s)
        return wait_s

    async def before_send(self) -> SendTicket:
        """Hold the call while the last second already holds ``floor(rate)`` sends, then record it."""
        while True:
            wait_s = self._local_window_wait()
            member = None
            if wait_s == 0 and self._window_script is not None:
                self._sends += 1
                member = f"{id(self):x}:{self._sends}"
                try:
                    wait_us = await self._window_script(
                        keys=[self._window_key], args=[int(self._window_s * 1e6), self._window_limit, member]
                    )
                    wait_s = int(wait_us) / 1_000_000
                except (RedisError, OSError):
                    wait_s, member = 0.0, None  # Redis is down: the local log alone guards this process
            if wait_s == 0:
                entry = [time.monotonic()]
                self._sent.append(entry)
                return SendTicket(entry, member)
            await asyncio.sleep(wait_s)

    async def sent(self, ticket: SendTicket) -> None:
        """The request's headers just left: record that moment instead of the grant."""
        ticket.entry[0] = time.monotonic()
        if ticket.member is None or self._move_script is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._move_script(keys=[self._window_key], args=[ticket.member])

    def _local_window_wait(self) -> float:
        now = time.monotonic()
        while self._sent and self._sent[0][0] <= now - self._window_s:
            self._sent.popleft()
        if len(self._sent) < self._window_limit:
            return 0.0
        return max(1e-3, self._sent[0][0] + self._window_s - now)

    def throttled(self) -> None:
        """The broker said slow down: halve the rate (down to a quarter of nominal)."""
        self.rate_factor = max(MIN_RATE_FACTOR, self.rate_factor * 0.5)
        log_event(logger, "limiter.slowed", logging.WARNING, domain=self.domain, rate_factor=self.rate_factor)

    def succeeded(self) -> None:
        """A call went through: win back a little of the nominal rate."""
        if self.rate_factor < 1.0:
            self.rate_factor = min(1.0, self.rate_factor + RECOVERY_PER_SUCCESS)
