"""The pacing benchmarks' baselines: client-side limiters as the libraries the hub replaces use them, driving
a KIS key of their own straight at the sandbox.

Each limiter is a model of the library's documented behaviour, written here (no library code is used):

- python-kis: a fixed window opened by the first call after the previous window ended, at most 19 calls in
  it; the next call waits until the window is over plus 50 ms and opens a new one (its lock is held while it
  sleeps, so calls keep their order).
- krsec: a token bucket of 15 tokens a second holding at most 3 (a burst of 3).
- own: one pacer at the key's 20 req/s per worker, three workers (the design before the hub).

Demand is as in the hub run: three callers each offering 100 req/s open loop, with the hub run's 2 s
deadline; a caller whose turn at the limiter would come after its deadline gives up without calling (so the
waiting line stays bounded; the limiter always has work, which is all that matters for its pace).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from tests.bench.harness import DirectKis, KeyWatch, fake_credentials, open_loop, watch


class Limiter(Protocol):
    """A client-side limiter that hands out send times."""

    def reserve(self, now: float, max_wait_s: float) -> float | None:
        """The time (``loop.time()`` scale) at which the caller may send, or None if it would be later than
        ``now + max_wait_s`` (then nothing is reserved)."""


class FixedWindow:
    """python-kis's limiter: ``rate`` calls per window of ``period_s`` opened by the first call; when a
    window is full the next call waits for its end plus ``pad_s`` and opens the next window."""

    def __init__(self, rate: int = 19, period_s: float = 1.0, pad_s: float = 0.05) -> None:
        self.rate, self.period_s, self.pad_s = rate, period_s, pad_s
        self._window_start = -1e9
        self._count = 0
        self._last = -1e9

    def reserve(self, now: float, max_wait_s: float) -> float | None:
        """See ``Limiter.reserve``."""
        at = max(now, self._last)  # the lock is held while sleeping: no call overtakes a waiting one
        start, count = self._window_start, self._count
        if at - start > self.period_s:
            start, count = at, 0
        if count >= self.rate:
            at = start + self.period_s + self.pad_s
            start, count = at, 0
        if at - now > max_wait_s:
            return None
        self._window_start, self._count, self._last = start, count + 1, at
        return at


class TokenBucket:
    """krsec's limiter: ``rate_per_s`` tokens a second, at most ``burst`` kept; a call takes one token and
    waits for it when there is none (reservations run into debt, so waiting calls are spaced 1/rate)."""

    def __init__(self, rate_per_s: float = 15.0, burst: int = 3) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens = float(burst)
        self._at: float | None = None

    def reserve(self, now: float, max_wait_s: float) -> float | None:
        """See ``Limiter.reserve``."""
        tokens = self._tokens
        if self._at is not None:
            tokens = min(float(self.burst), tokens + (now - self._at) * self.rate_per_s)
        at = now if tokens >= 1 else now + (1 - tokens) / self.rate_per_s
        if at - now > max_wait_s:
            return None
        self._tokens, self._at = tokens - 1, now
        return at


class Pacer:
    """One call every ``1 / rate_per_s`` seconds, no burst (a worker's own pacer at a fixed rate)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1 / rate_per_s
        self._next = -1e9

    def reserve(self, now: float, max_wait_s: float) -> float | None:
        """See ``Limiter.reserve``."""
        at = max(now, self._next)
        if at - now > max_wait_s:
            return None
        self._next = at + self.interval_s
        return at


class Lifecycle:
    """Crashes and restarts of the baseline's process, driven by the benchmark (``pacing-kill``): while it
    is down no call starts and calls waiting at the limiter are lost; each restart brings fresh limiters
    (a library keeps its limiter in memory)."""

    def __init__(self) -> None:
        self.generation = 0
        self.down = False
        self.crashes = 0

    def crash(self) -> None:
        """The process dies: waiting calls are lost, new ones fail until ``restart``."""
        self.down = True
        self.generation += 1
        self.crashes += 1

    def restart(self) -> None:
        """The process is back, with fresh limiters."""
        self.down = False
        self.generation += 1


@dataclass
class LibraryRun:
    """What one baseline did: the referee's view of its key and what its callers saw."""

    name: str
    key: KeyWatch
    codes: Counter[str] = field(default_factory=Counter)
    gave_up: int = 0
    lost: int = 0  # calls that were down or waiting at the limiter when the process crashed

    @property
    def sent(self) -> int:
        """Calls that reached the point of sending."""
        return sum(self.codes.values())


@dataclass(frozen=True)
class Baseline:
    """A baseline to run: its name and how many workers, each with its own limiter (from ``make``)."""

    name: str
    workers: int
    make: Callable[[], Limiter]


PYTHON_KIS = Baseline("python-kis", 1, lambda: FixedWindow(19, 1.0, 0.05))
KRSEC = Baseline("krsec", 1, lambda: TokenBucket(15.0, 3))
OWN = Baseline("own 20/s x 3", 3, lambda: Pacer(20.0))


async def run_baseline(
    url: str,
    baseline: Baseline,
    duration_s: float,
    *,
    callers: int = 3,
    rate_per_caller: float = 100.0,
    deadline_s: float = 2.0,
    limit_per_s: float = 20.0,
    stop: asyncio.Event | None = None,
    lifecycle: Lifecycle | None = None,
) -> LibraryRun:
    """Drive one fresh key through ``baseline``'s limiter(s) with the hub run's demand for ``duration_s``
    (or until ``stop`` is set), crashing and restarting with ``lifecycle`` if given. With several workers the
    callers are spread over them, each worker with its own session and limiter; the first worker's token
    is shared (a favour: alone they would be refused EGW00133)."""
    credentials = fake_credentials()
    sessions = [aiohttp.ClientSession() for _ in range(baseline.workers)]
    result = LibraryRun(baseline.name, KeyWatch(limit_per_s))
    try:
        clients = [DirectKis(s, url, credentials) for s in sessions]
        status, code = await clients[0].issue_token()
        if status != 200:
            raise RuntimeError(f"baseline {baseline.name}: token refused: {status} {code}")
        for client in clients[1:]:
            client.token = clients[0].token
        limiters: list[Limiter] = [baseline.make() for _ in clients]
        generation = [lifecycle.generation if lifecycle else 0]
        loop = asyncio.get_running_loop()

        def fire_for(worker: int) -> Callable[[int], Coroutine[Any, Any, None]]:
            client = clients[worker]

            async def fire(_: int) -> None:
                if lifecycle is not None:
                    if lifecycle.down:
                        result.lost += 1
                        return
                    if lifecycle.generation != generation[0]:  # restarted: the limiters start afresh
                        generation[0] = lifecycle.generation
                        limiters[:] = [baseline.make() for _ in clients]
                born = generation[0]
                now = loop.time()
                at = limiters[worker].reserve(now, deadline_s)
                if at is None:
                    result.gave_up += 1
                    return
                if at > now:
                    await asyncio.sleep(at - now)
                if lifecycle is not None and (lifecycle.down or lifecycle.generation != born):
                    result.lost += 1  # the process died while this call waited at its limiter
                    return
                try:
                    status, code = await client.price()
                    result.codes[f"{status}/{code or '-'}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.codes[type(exc).__name__] += 1

            return fire

        rate = rate_per_caller
        load = asyncio.gather(
            *(
                open_loop(
                    rate,
                    duration_s,
                    fire_for(i % len(clients)),
                    phase_s=random.random() / rate,
                    drain_timeout_s=deadline_s + 10,
                    stop=stop,
                )
                for i in range(callers)
            )
        )
        result.key = await watch(sessions[0], url, credentials[0], duration_s, load, limit_per_s, stop)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.gather(*(s.close() for s in sessions))
    return result
