"""Pure policy on a run of trades: joining pages, knowing when the walk is done, cutting the window.

The brokers list trades newest first and to the second only; a *run* is such a list, the pages of one walk
joined. Four decisions, each a pure function with its own table of tests:

- ``join_page``: append the next (older) page to the run. Pages are contiguous stretches of the tape, so a
  page can only repeat the run's oldest rows: its rows newer than the run's oldest second are dropped, and
  so are its first rows of that second when they repeat the last rows the run holds of it (the same
  prices and volumes, in the same order; the longest such repetition). Anything else in that second
  continues the run: the older trades of a second that a page boundary split. Only a trade exactly like
  the one before it in the same second, falling on a page boundary, cannot be told from a repeat; it is
  taken for one.
- ``walk_reached``: the run holds a trade older than the window's start, so every trade of the window is
  in it and no further page is needed.
- ``holds_day``: a walk that ended without reaching the start still covers the window when it got back to
  the window's day (the broker keeps whole days); otherwise the day is beyond the broker's history.
- ``window_trades``: the run's trades inside ``[start, end)`` in tape order (oldest first), each numbered
  ``n`` = 0, 1, ... within its second. ``(time, n)`` identifies a trade: every trade of a second is in the
  run once (a window is whole minutes), so the numbers are the same on every fetch of the window.

``latest_cover``: KIS ``FHKST01010300`` answers only the latest ``KIS_LATEST_TRADES`` trades of the day;
they hold the window when the oldest of them is older than its start, or when there are fewer (the day's
whole tape so far).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from hubclient.market import Tick

#: Trades FHKST01010300 returns at most (the latest of the day).
KIS_LATEST_TRADES = 30


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade of a recovered window: ``time`` KST to the second, ``n`` its place within that second
    (0 first, in tape order), ``price`` in KRW, ``volume`` in shares."""

    time: datetime
    n: int
    price: int
    volume: int

    def as_value(self) -> dict[str, Any]:
        """The trade as it appears in a window record's ``ticks``."""
        return {"time_kst": self.time.isoformat(), "n": self.n, "price": self.price, "volume": self.volume}


def _same_trade(a: Tick, b: Tick) -> bool:
    return (a.time, a.price, a.volume) == (b.time, b.price, b.volume)


def join_page(run: Sequence[Tick], page: Sequence[Tick]) -> list[Tick]:
    """``run`` followed by the rows of ``page`` (both newest first) it does not hold yet."""
    if not run:
        return list(page)
    oldest = run[-1].time
    rest = [tick for tick in page if tick.time <= oldest]  # newer rows are held already
    held = 0  # the run's rows of its oldest second
    while held < len(run) and run[-1 - held].time == oldest:
        held += 1
    tail = run[len(run) - held :]
    for repeated in range(min(held, len(rest)), 0, -1):  # the longest repetition of the tail's end
        if all(_same_trade(a, b) for a, b in zip(rest[:repeated], tail[-repeated:], strict=True)):
            return [*run, *rest[repeated:]]
    return [*run, *rest]


def walk_reached(run: Sequence[Tick], start_at: datetime) -> bool:
    """True when the run (newest first) goes back past ``start_at``: it holds every trade after it."""
    return bool(run) and run[-1].time < start_at


def holds_day(run: Sequence[Tick], day: date) -> bool:
    """True when a finished walk got back to ``day`` (its oldest trade is of that day or earlier)."""
    return bool(run) and run[-1].time.date() <= day


def latest_cover(latest: Sequence[Tick], start_at: datetime) -> bool:
    """True when FHKST01010300's latest trades (newest first) hold every trade from ``start_at`` on."""
    return len(latest) < KIS_LATEST_TRADES or latest[-1].time < start_at


def window_trades(run: Sequence[Tick], start_at: datetime, end_at: datetime) -> list[Trade]:
    """The trades of ``run`` (newest first) in ``[start_at, end_at)``, oldest first, numbered per second."""
    trades: list[Trade] = []
    for tick in reversed(run):
        if not start_at <= tick.time < end_at:
            continue
        n = trades[-1].n + 1 if trades and trades[-1].time == tick.time else 0
        trades.append(Trade(tick.time, n, tick.price, tick.volume))
    return trades
