"""Rate limits counted on arrival, and the referee's tally of what every environment and appkey received.

A request is an *arrival* the moment its bytes reached the sandbox, whatever happens next: a refused,
throttled or faulted call still counts. That moment is the kernel's receive stamp of the request's
bytes (stamps.py), so a stall of the sandbox's own event loop (a busy core, a collection), which holds
requests that already sit in the socket and then runs their handlers together, does not bunch them in
the count; where no stamp is known the arrival counts when its handler starts. Per (environment, appkey)
the referee keeps the arrival times of the last two seconds in order (the sliding window is half-open,
``(t - 1 s, t]``); each arrival is judged by the fullest window that holds it (an arrival handled after
a later one may be its predecessor), and the largest count is ``max_in_window``, the maximum over every
possible one-second window. An arrival that makes a window exceed the limit is refused and counted in
``over_limit``. Token endpoints are tallied but do not enter the per-second window: they have their own
limit (the issuance interval, see tokens.py).

Limit classes: every arrival of a catalog endpoint (by its real or mock id) is also counted in a window of
its ``hubclient.catalog`` limit class (``query``, ``ledger`` for KIS account and order calls, ``order`` for
Kiwoom orders), per appkey. Where the environment sets a rate for the class (``Environment.class_rates``)
an arrival over it is refused (``Arrival.over_class``: KIS answers ``EGW00215``, Kiwoom ``1700``) and
counted in the class's ``over_limit``; the key's own limit is judged first.

Times come from the sandbox clock's monotonic source, so tests can freeze or advance them (a receive
stamp's age is converted at the clock's rate: frozen, every arrival is "now").

The referee also reports ``loop_lag`` (looplag.py): a background task started with the app wakes every
5 ms on the *real* monotonic clock (not the simulated one) and records how late each wake-up was: how
long handlers waited, which receive stamps make harmless to the count (and which would bunch it where no
stamp is known). ``max_ms`` is the longest stall seen; ``p99_ms`` is a histogram estimate (bucket upper
edge: 0.1 ms below 10 ms, within 10 % above), ``over_Nms`` count wake-ups more than N ms late. The
snapshot's ``stamped`` says how many window arrivals were timed by a receive stamp (the rest by their
handler). ``reset()`` clears it all.

``snapshot()`` shape (``GET /_sandbox/stats``)::

    {"clock": {...},
     "loop_lag": {"max_ms": 0.0, "p99_ms": 0.0, "samples": 0, "over_10ms": 0, "over_20ms": 0,
         "over_50ms": 0},
     "environments": {"kis/real": {"provider": "KIS", "environment": "real", "rate_per_s": 20,
         "requests": 0, "window_requests": 0, "stamped": 0, "max_in_window": 0, "over_limit": 0,
         "tokens_issued": 0, "tokens_new": 0, "token_refusals": 0,
         "orders_accepted": 0, "orders_timed_out": 0, "faults": {"arrival_jitter": 0, "latency": 0,
         "error": 0, "drop": 0},
         "by_tr_id": {"FHKST01010100": 0}, "by_code": {"ok": 0, "EGW00201": 0},
         "classes": {"ledger": {"rate_per_s": 0, "requests": 0, "max_in_window": 0, "over_limit": 0}},
         "appkeys": {"<appkey_label(key)>": {same counters, without provider/environment/rate_per_s,
             appkeys}}},
      ...}}

(``rate_per_s`` of a class is 0 where the environment does not limit it.)

At environment level ``max_in_window`` is the largest of its appkeys' values (the number to compare with
the per-appkey limit) and ``max_in_window_combined`` the same measure over all appkeys together.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hubclient.catalog import entries
from services.sandbox.clock import SimClock
from services.sandbox.looplag import LoopLag

WINDOW_NS = 1_000_000_000  # one second


def appkey_label(appkey: str) -> str:
    """How the report names an appkey: a hash, never the key (``/_sandbox/stats`` is read by tools and
    tests whose output may be kept); callers look their key up with the same function."""
    return "key-" + hashlib.sha256(appkey.encode()).hexdigest()[:16]


UNKNOWN_APPKEY = "(unknown)"


@cache
def limit_classes() -> dict[tuple[str, str], str]:
    """(provider, tr_id) -> the catalog's limit class, for real and mock ids alike."""
    out: dict[tuple[str, str], str] = {}
    for spec in entries():
        for tr_id in (spec.tr_id, spec.mock_tr_id):
            if tr_id:
                out.setdefault((spec.provider.value, tr_id), spec.limit_class.value)
    return out


class _Arrivals:
    """Arrival times of one counter in time order (an arrival may be counted after a later one: its
    bytes came first but its handler ran second), kept two seconds behind the newest, and the most any
    one-second window ever held."""

    __slots__ = ("max_in_window", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.max_in_window = 0

    def add(self, at_ns: int) -> int:
        """Count one arrival at ``at_ns``; return the largest count of the windows ``(y - 1 s, y]`` that
        hold it (those ending at ``y`` in ``[at_ns, at_ns + 1 s)``: for an arrival in order, just the one
        ending at it)."""
        times = self.times
        index = bisect_right(times, at_ns)
        times.insert(index, at_ns)
        most = 0
        end = index
        while end < len(times) and times[end] < at_ns + WINDOW_NS:
            first = bisect_right(times, times[end] - WINDOW_NS, 0, end)
            most = max(most, end - first + 1)
            end += 1
        stale = bisect_left(times, times[-1] - 2 * WINDOW_NS)
        if stale:
            del times[:stale]
        self.max_in_window = max(self.max_in_window, most)
        return most


@dataclass
class _Window:
    """One limit class's arrivals of one appkey."""

    arrivals: _Arrivals = field(default_factory=_Arrivals)
    requests: int = 0
    over_limit: int = 0

    def arrive(self, now_ns: int) -> int:
        self.requests += 1
        return self.arrivals.add(now_ns)

    def as_dict(self, rate_per_s: int) -> dict[str, int]:
        return {
            "rate_per_s": rate_per_s,
            "requests": self.requests,
            "max_in_window": self.arrivals.max_in_window,
            "over_limit": self.over_limit,
        }


@dataclass
class _Tally:
    requests: int = 0
    window_requests: int = 0
    stamped: int = 0
    max_in_window: int = 0
    over_limit: int = 0
    tokens_issued: int = 0
    tokens_new: int = 0
    token_refusals: int = 0
    orders_accepted: int = 0
    orders_timed_out: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    by_tr_id: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    window: _Arrivals = field(default_factory=_Arrivals)
    classes: dict[str, _Window] = field(default_factory=dict)

    def arrive(self, now_ns: int, tr_id: str, in_window: bool, stamped: bool) -> int:
        self.requests += 1
        self.by_tr_id[tr_id] += 1
        if not in_window:
            return 0
        self.window_requests += 1
        self.stamped += stamped
        count = self.window.add(now_ns)
        self.max_in_window = max(self.max_in_window, count)
        return count

    def as_dict(self, class_rates: dict[str, int]) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "window_requests": self.window_requests,
            "stamped": self.stamped,
            "max_in_window": self.max_in_window,
            "over_limit": self.over_limit,
            "tokens_issued": self.tokens_issued,
            "tokens_new": self.tokens_new,
            "token_refusals": self.token_refusals,
            "orders_accepted": self.orders_accepted,
            "orders_timed_out": self.orders_timed_out,
            "faults": dict(self.faults),
            "by_tr_id": dict(self.by_tr_id),
            "by_code": dict(self.by_code),
            "classes": {
                name: window.as_dict(class_rates.get(name, 0))
                for name, window in sorted(self.classes.items())
            },
        }


@dataclass(frozen=True, slots=True)
class Environment:
    """One simulated server: provider KIS or KIWOOM, name real or mock, its per-appkey limit."""

    provider: str
    name: str
    rate_per_s: int
    class_rates: tuple[tuple[str, int], ...] = ()  # (limit class, per-appkey rate); 0 or absent = unlimited

    @property
    def env_id(self) -> str:
        """Path-style id, e.g. ``kis/real``."""
        return f"{self.provider.lower()}/{self.name}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the referee decided about one arrival."""

    env_id: str
    appkey: str
    in_window: int  # requests of this appkey in the window ending now, this one included (0 = not counted)
    over_limit: bool
    over_class: str | None = None  # the limit class whose rate this arrival exceeds (the key's was not)
    class_rate_per_s: int = 0  # that class's rate


class Referee:
    """Per-environment, per-appkey arrival windows, limits and counters."""

    def __init__(self, clock: SimClock, environments: list[Environment]) -> None:
        self._clock = clock
        self._envs = {env.env_id: env for env in environments}
        self._keys: dict[str, dict[str, _Tally]] = {}
        self._combined: dict[str, _Tally] = {}
        self.loop_lag = LoopLag()  # fed by looplag.watch, started with the app (app.py)
        self.reset()

    def reset(self) -> None:
        """Forget every count and window, and the loop-lag samples."""
        self.loop_lag.reset()
        self._keys = {env_id: {} for env_id in self._envs}
        self._combined = {env_id: _Tally() for env_id in self._envs}

    def _tally(self, env_id: str, appkey: str) -> _Tally:
        keys = self._keys[env_id]
        tally = keys.get(appkey)
        if tally is None:
            tally = keys[appkey] = _Tally()
        return tally

    def arrive(
        self,
        env_id: str,
        appkey: str | None,
        tr_id: str,
        in_window: bool = True,
        *,
        ago_ns: int | None = None,
    ) -> Arrival:
        """Count one arrival that happened ``ago_ns`` real nanoseconds ago (its bytes' receive stamp; None
        = now, no stamp known); ``over_limit`` tells the caller to refuse it."""
        key = appkey or UNKNOWN_APPKEY
        stamped = ago_ns is not None
        now_ns = self._clock.monotonic_ns_ago(ago_ns) if ago_ns is not None else self._clock.monotonic_ns()
        tally = self._tally(env_id, key)
        count = tally.arrive(now_ns, tr_id, in_window, stamped)
        self._combined[env_id].arrive(now_ns, tr_id, in_window, stamped)
        env = self._envs[env_id]
        over = in_window and count > env.rate_per_s
        if over:
            tally.over_limit += 1
        limit_class = limit_classes().get((env.provider, tr_id)) if in_window else None
        if limit_class is None:
            return Arrival(env_id, key, count, over)
        window = tally.classes.setdefault(limit_class, _Window())
        rate = dict(env.class_rates).get(limit_class, 0)
        over_class = window.arrive(now_ns) > rate > 0 and not over
        if over_class:
            window.over_limit += 1
        return Arrival(env_id, key, count, over, limit_class if over_class else None, rate)

    def outcome(self, arrival: Arrival, code: str) -> None:
        """Record the answer's code (``ok``, ``EGW00201``, ``1700``, ...)."""
        self._tally(arrival.env_id, arrival.appkey).by_code[code] += 1

    def fault(self, arrival: Arrival, kind: str) -> None:
        """Record an injected fault (``arrival_jitter``, ``latency``, ``error``, ``drop``)."""
        self._tally(arrival.env_id, arrival.appkey).faults[kind] += 1

    def token_issued(self, env_id: str, appkey: str, new: bool) -> None:
        """Record a successful token answer; ``new`` when a fresh token was minted."""
        tally = self._tally(env_id, appkey)
        tally.tokens_issued += 1
        tally.tokens_new += int(new)

    def token_refused(self, env_id: str, appkey: str) -> None:
        """Record an issuance attempt refused by the issuance interval."""
        self._tally(env_id, appkey).token_refusals += 1

    def order(self, env_id: str, appkey: str, timed_out: bool) -> None:
        """Record an accepted order; ``timed_out`` when it was answered as a timeout anyway."""
        tally = self._tally(env_id, appkey)
        tally.orders_accepted += 1
        tally.orders_timed_out += int(timed_out)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready referee report (shape in the module docstring), ``loop_lag`` included."""
        environments: dict[str, Any] = {}
        for env_id, env in self._envs.items():
            keys = self._keys[env_id]
            total = _Tally()
            for tally in keys.values():
                for name in (
                    "requests",
                    "window_requests",
                    "stamped",
                    "over_limit",
                    "tokens_issued",
                    "tokens_new",
                    "token_refusals",
                    "orders_accepted",
                    "orders_timed_out",
                ):
                    setattr(total, name, getattr(total, name) + getattr(tally, name))
                total.max_in_window = max(total.max_in_window, tally.max_in_window)
                total.faults.update(tally.faults)
                total.by_tr_id.update(tally.by_tr_id)
                total.by_code.update(tally.by_code)
                for name, window in tally.classes.items():  # per appkey: the worst key, summed counts
                    merged = total.classes.setdefault(name, _Window())
                    merged.requests += window.requests
                    merged.over_limit += window.over_limit
                    merged.arrivals.max_in_window = max(
                        merged.arrivals.max_in_window, window.arrivals.max_in_window
                    )
            rates = dict(env.class_rates)
            environments[env_id] = {
                "provider": env.provider,
                "environment": env.name,
                "rate_per_s": env.rate_per_s,
                **total.as_dict(rates),
                "max_in_window_combined": self._combined[env_id].max_in_window,
                "appkeys": {appkey_label(key): tally.as_dict(rates) for key, tally in sorted(keys.items())},
            }
        return {
            "clock": self._clock.snapshot(),
            "loop_lag": self.loop_lag.snapshot(),
            "environments": environments,
        }
