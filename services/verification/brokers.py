"""The brokers' one-minute bars of a window, fetched through the hub as ``interactive`` calls.

| provider | tr_id | when | asked for | rows a page |
|---|---|---|---|---|
| KIS | ``FHKST03010200`` | the day is today (KST) | bars up to the window's last minute | 30 |
| KIS | ``FHKST03010230`` | past days (real servers only) | the same on ``FID_INPUT_DATE_1`` | 120 |
| Kiwoom | ``ka10080`` | any day | ``tic_scope=1``, unadjusted, from the close of ``base_dt`` | ~900 |

KIS is asked from the window's last minute (``FID_INPUT_HOUR_1``) backwards, one day only.

Rows come newest first. ``paginate`` follows the gateway's continuations (KIS time cursor, Kiwoom
``cont-yn``/``next-key``) and the walk stops as soon as a page reaches the window's start, or an earlier
day; ``max_pages`` bounds it besides. Prices are unadjusted, as the collected trades are. The bodies are
read with ``hubclient.market``; only the bars of the day that start inside the window are kept.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final, cast

from hubclient import HubClient, paginate
from hubclient.market import KST, Candle, KisMinuteTrId, kis_minute_candles, kiwoom_minute_candles
from hubclient.models import ApiResponse, Priority, Provider
from services.verification.minutes import MinuteBar, Window, bars_from_candles

KIS_TODAY: Final = "FHKST03010200"
KIS_PAST: Final = "FHKST03010230"
KIWOOM_MINUTES: Final = "ka10080"
KIS_ROWS_PER_PAGE = {KIS_TODAY: 30, KIS_PAST: 120}
#: Pages of a Kiwoom walk at most: its first page starts at the day's close, whatever the window.
KIWOOM_MAX_PAGES = 10


@dataclass(frozen=True, slots=True)
class MinuteQuery:
    """The bars wanted: ``window`` of ``symbol`` on ``day``; ``today`` picks KIS's same-day chart."""

    symbol: str
    day: date
    window: Window
    today: bool

    @property
    def first(self) -> datetime:
        """The window's first instant (KST)."""
        return datetime.combine(self.day, time(), KST) + timedelta(minutes=self.window.start)

    @property
    def last_second(self) -> str:
        """``HHMMSS`` of the window's last minute: the newest bar to ask KIS for."""
        minute = self.window.end - 1
        return f"{minute // 60:02d}{minute % 60:02d}00"


@dataclass(frozen=True, slots=True)
class Walk:
    """One paged call: what to send and how to read each page."""

    provider: Provider
    tr_id: str
    params: dict[str, str]
    read: Callable[[Any], list[Candle]]
    max_pages: int


def kis_walk(query: MinuteQuery) -> Walk:
    """The KIS call for ``query``: today's chart, or the past-day chart."""
    tr_id: KisMinuteTrId = KIS_TODAY if query.today else KIS_PAST
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": query.symbol,
        "FID_INPUT_HOUR_1": query.last_second,
        "FID_PW_DATA_INCU_YN": "N",  # this day only, never the days before
    }
    if query.today:
        params["FID_ETC_CLS_CODE"] = ""
    else:
        params |= {"FID_INPUT_DATE_1": f"{query.day:%Y%m%d}", "FID_FAKE_TICK_INCU_YN": ""}
    pages = math.ceil(len(query.window) / KIS_ROWS_PER_PAGE[tr_id]) + 1

    def read(data: Any) -> list[Candle]:
        return kis_minute_candles(data, symbol=query.symbol, tr_id=tr_id)

    return Walk(Provider.KIS, tr_id, params, read, pages)


def kiwoom_walk(query: MinuteQuery) -> Walk:
    """The Kiwoom call for ``query``: one-minute bars of the day, unadjusted."""
    params = {"stk_cd": query.symbol, "tic_scope": "1", "upd_stkpc_tp": "0", "base_dt": f"{query.day:%Y%m%d}"}

    def read(data: Any) -> list[Candle]:
        return kiwoom_minute_candles(data, symbol=query.symbol)

    return Walk(Provider.KIWOOM, KIWOOM_MINUTES, params, read, KIWOOM_MAX_PAGES)


async def fetch_bars(
    hub: HubClient, walk: Walk, query: MinuteQuery, *, timeout_s: float, max_s: float
) -> dict[int, MinuteBar]:
    """The window's bars from ``walk``; ``timeout_s`` per page, ``max_s`` for the whole walk (seconds)."""
    candles: list[Candle] = []
    pages = cast(
        AsyncGenerator[ApiResponse, None],
        paginate(
            hub,
            walk.provider,
            walk.tr_id,
            walk.params,
            timeout=timeout_s,
            max_s=max_s,
            max_pages=walk.max_pages,
            priority=Priority.INTERACTIVE,
        ),
    )
    async with aclosing(pages):
        async for page in pages:
            rows = walk.read(page.data)
            candles.extend(rows)
            if not rows or min(c.start for c in rows) <= query.first:
                break  # the window's start is reached; older pages hold nothing of it
    return bars_from_candles(candles, query.day, query.window)
