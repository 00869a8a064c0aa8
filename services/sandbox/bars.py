"""Value types of the simulated market and the pure functions on them: KRX price rules, ticks, bars.

Bars are aggregated from ticks (minute bars) or from daily bars (weeks, months, years); adjusted views
divide prices by a split factor and multiply volumes by it. Nothing here knows about seeds or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import NamedTuple

from services.sandbox.clock import KST

OPEN_S = 9 * 3600  # 09:00:00 KST, seconds since midnight
CLOSE_S = 15 * 3600 + 30 * 60  # 15:30:00 KST, closing auction


def tick_size(price: float) -> int:
    """KRX price unit (KRW) for a price level (2023 rules, KOSPI and KOSDAQ alike)."""
    if price < 2_000:
        return 1
    if price < 5_000:
        return 5
    if price < 20_000:
        return 10
    if price < 50_000:
        return 50
    if price < 200_000:
        return 100
    if price < 500_000:
        return 500
    return 1_000


def round_tick(price: float) -> int:
    """Nearest valid KRX price (KRW), at least 1."""
    unit = tick_size(price)
    return max(unit, int(price / unit + 0.5) * unit)


def price_limits(prev_close: int) -> tuple[int, int]:
    """(upper, lower) daily price limits in KRW: +-30 % of the reference price, on valid ticks."""
    up = prev_close * 1.3
    down = prev_close * 0.7
    upper = int(up // tick_size(up)) * tick_size(up)
    lower_unit = tick_size(down)
    lower = -int(-down // lower_unit) * lower_unit
    return upper, max(lower, 1)


def direction_code(price: int, reference: int) -> str:
    """Direction code KIS and Kiwoom share: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down."""
    if reference <= 0:
        return "3"
    upper, lower = price_limits(reference)
    if price > reference:
        return "1" if price >= upper else "2"
    if price < reference:
        return "4" if price <= lower else "5"
    return "3"


def hhmmss(second: int) -> str:
    """Seconds since midnight as HHMMSS."""
    return f"{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}"


class Tick(NamedTuple):
    """One trade: seconds since 00:00 KST of its day, price KRW, volume shares."""

    second: int
    price: int
    volume: int

    def at(self, day: date) -> datetime:
        """The trade's timestamp (KST) on ``day``."""
        return datetime.combine(day, time(), KST) + timedelta(seconds=self.second)


@dataclass(frozen=True, slots=True)
class Bar:
    """A minute bar labelled by its start minute; cum_* run from the open through this bar."""

    day: date
    minute: int  # minutes since 00:00 KST, e.g. 540 = 09:00
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int  # KRW traded in the bar
    cum_volume: int
    cum_value: int

    @property
    def start(self) -> datetime:
        """Start of the bar (KST)."""
        return datetime.combine(self.day, time(), KST) + timedelta(minutes=self.minute)


@dataclass(frozen=True, slots=True)
class DailyBar:
    """One day (or, aggregated, one week/month/year) of trading; prices KRW, volume shares, value KRW."""

    day: date
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int
    prev_close: int  # reference price of the first day in the bar


def aggregate_minutes(day: date, ticks: Iterable[Tick]) -> list[Bar]:
    """One-minute bars (oldest first) from one day's ticks, labelled by start minute, with running totals."""
    bars: list[Bar] = []
    cum_vol = cum_val = 0
    cur = -1
    o = h = lo = c = v = val = 0
    for sec, price, volume in ticks:
        minute = sec // 60
        if minute != cur:
            if cur >= 0:
                bars.append(Bar(day, cur, o, h, lo, c, v, val, cum_vol, cum_val))
            cur, o, h, lo, v, val = minute, price, price, price, 0, 0
        h = max(h, price)
        lo = min(lo, price)
        c = price
        v += volume
        val += price * volume
        cum_vol += volume
        cum_val += price * volume
    if cur >= 0:
        bars.append(Bar(day, cur, o, h, lo, c, v, val, cum_vol, cum_val))
    return bars


def minute_buckets(bars: list[Bar], minutes: int) -> list[Bar]:
    """Merge oldest-first one-minute bars into ``minutes``-wide bars aligned on 09:00."""
    if minutes == 1:
        return bars
    out: list[Bar] = []
    open_minute = OPEN_S // 60
    for bar in bars:
        label = open_minute + (bar.minute - open_minute) // minutes * minutes
        last = out[-1] if out else None
        if last is not None and last.minute == label:
            out[-1] = Bar(
                bar.day,
                label,
                last.open,
                max(last.high, bar.high),
                min(last.low, bar.low),
                bar.close,
                last.volume + bar.volume,
                last.value + bar.value,
                bar.cum_volume,
                bar.cum_value,
            )
        else:
            out.append(
                Bar(
                    bar.day,
                    label,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume,
                    bar.value,
                    bar.cum_volume,
                    bar.cum_value,
                )
            )
    return out


def _adj(price: int, factor: int) -> int:
    return price if factor == 1 else round_tick(price / factor)


def adjust_daily(bar: DailyBar, factor: int) -> DailyBar:
    """A daily bar on the post-split share basis (prices / factor, volume x factor)."""
    if factor == 1:
        return bar
    return DailyBar(
        bar.day,
        _adj(bar.open, factor),
        _adj(bar.high, factor),
        _adj(bar.low, factor),
        _adj(bar.close, factor),
        bar.volume * factor,
        bar.value,
        _adj(bar.prev_close, factor),
    )


def adjust_minute(bar: Bar, factor: int) -> Bar:
    """A minute bar on the post-split share basis."""
    if factor == 1:
        return bar
    return Bar(
        bar.day,
        bar.minute,
        _adj(bar.open, factor),
        _adj(bar.high, factor),
        _adj(bar.low, factor),
        _adj(bar.close, factor),
        bar.volume * factor,
        bar.value,
        bar.cum_volume * factor,
        bar.cum_value,
    )


def _bucket(day: date, period: str) -> tuple[int, int]:
    if period == "W":
        iso = day.isocalendar()
        return iso.year, iso.week
    if period == "M":
        return day.year, day.month
    if period == "Y":
        return day.year, 0
    return day.toordinal(), 0


def aggregate(bars: list[DailyBar], period: str) -> list[DailyBar]:
    """Group oldest-first daily bars by D/W/M/Y; each group is labelled by its first trading day."""
    if period == "D":
        return list(bars)
    out: list[DailyBar] = []
    group: list[DailyBar] = []
    for bar in bars:
        if group and _bucket(bar.day, period) != _bucket(group[0].day, period):
            out.append(_merge(group))
            group = []
        group.append(bar)
    if group:
        out.append(_merge(group))
    return out


def _merge(group: list[DailyBar]) -> DailyBar:
    first, last = group[0], group[-1]
    return DailyBar(
        first.day,
        first.open,
        max(b.high for b in group),
        min(b.low for b in group),
        last.close,
        sum(b.volume for b in group),
        sum(b.value for b in group),
        first.prev_close,
    )
