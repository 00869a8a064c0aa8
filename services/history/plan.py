"""The history-collector's policy as pure functions: pieces, closed sessions, tr_ids, parameters, coverage.

- A job is cut into **pieces**, each fetched and committed on its own: one symbol-day for ``1m``, one symbol
  over the whole range for ``1d``. Days after today hold nothing yet and are left out.
- A day is **closed** when its data can no longer change: a weekend, a day before today (KST), or today once
  the charts are final (``CHARTS_FINAL``, ten minutes after the 15:30 closing auction). A closed day's
  progress record lets every later job skip it without an upstream call.
- Minute bars: KIS ``FHKST03010200`` for today, ``FHKST03010230`` for past days; Kiwoom ``ka10080``. Daily
  bars: KIS ``FHKST03010100``, Kiwoom ``ka10081``. Prices are as traded (not split-adjusted), so a day's
  ``1d`` candle and its ``1m`` candles agree with each other and with the ticks.
- Both brokers answer newest first and page backwards; a piece is **covered** once a page reaches its first
  instant (09:00 of a ``1m`` day, the first day of a ``1d`` range), and paging stops there. Rows outside
  the piece (earlier days on the same page) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final

from hubclient.market import KST, Candle, Timeframe
from hubclient.models import Provider
from services.history.job import HistoryJob

SESSION_OPEN = time(9, 0)
SESSION_CLOSE = time(15, 30)
#: When today's charts are final: the closing auction's bar is in and late corrections have settled.
CHARTS_FINAL = time(15, 40)
#: Page bound of a ``1m`` piece: a session is 391 bars, 14 pages of 30 (today, KIS), 4 of 120 (a past day),
#: one or two of Kiwoom's 900.
MINUTE_MAX_PAGES = 20
#: A ``1d`` piece may take one page per this many calendar days (KIS pages hold 100 trading days).
DAILY_DAYS_PER_PAGE = 50
KIS_MINUTE_TODAY: Final = "FHKST03010200"
KIS_MINUTE_PAST: Final = "FHKST03010230"
KIS_DAILY: Final = "FHKST03010100"
KIWOOM_MINUTE: Final = "ka10080"
KIWOOM_DAILY: Final = "ka10081"


@dataclass(frozen=True, slots=True)
class Piece:
    """What one fetch-and-commit covers: ``symbol``'s ``timeframe`` bars of the days ``first``..``last``."""

    symbol: str
    timeframe: Timeframe
    first: date
    last: date

    def days(self) -> Iterator[date]:
        """Every calendar day of the piece, oldest first."""
        return calendar(self.first, self.last)

    def label(self) -> str:
        """``005930 1m 2026-11-27`` or ``005930 1d 2026-11-01..2026-11-27``, for logs and errors."""
        span = str(self.first) if self.first == self.last else f"{self.first}..{self.last}"
        return f"{self.symbol} {self.timeframe} {span}"


def calendar(first: date, last: date) -> Iterator[date]:
    """Calendar days ``first``..``last``, both included."""
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def pieces(job: HistoryJob, today: date) -> list[Piece]:
    """The pieces of ``job`` as of ``today`` (KST): symbol-days for ``1m``, one per symbol for ``1d``."""
    last = min(job.last_day, today)
    if job.first_day > last:
        return []
    if job.timeframe == "1d":
        return [Piece(symbol, "1d", job.first_day, last) for symbol in job.symbols]
    return [Piece(symbol, "1m", day, day) for symbol in job.symbols for day in calendar(job.first_day, last)]


def trades_on(day: date) -> bool:
    """False for Saturdays and Sundays, when KRX never trades (holidays are learnt from the brokers)."""
    return day.weekday() < 5


def is_closed(day: date, now: datetime) -> bool:
    """True when ``day``'s bars can no longer change as of ``now`` (KST-aware)."""
    local = now.astimezone(KST)
    today = local.date()
    if day > today:
        return False
    if day < today or not trades_on(day):
        return True
    return local.time() >= CHARTS_FINAL


def chart_tr_id(provider: Provider, timeframe: Timeframe, day: date, today: date) -> str:
    """The tr_id that serves ``timeframe`` bars of ``day`` (the last day of a ``1d`` range) on ``today``."""
    if provider is Provider.KIWOOM:
        return KIWOOM_MINUTE if timeframe == "1m" else KIWOOM_DAILY
    if timeframe == "1d":
        return KIS_DAILY
    return KIS_MINUTE_TODAY if day == today else KIS_MINUTE_PAST


def chart_params(tr_id: str, piece: Piece) -> dict[str, str]:
    """The parameters of ``tr_id``'s first page for ``piece`` (as-traded prices, one-minute/daily bars)."""
    first, last = f"{piece.first:%Y%m%d}", f"{piece.last:%Y%m%d}"
    kis = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": piece.symbol}
    if tr_id == KIS_MINUTE_TODAY:
        # a time after now is read as now by the broker; the gateway moves it back page by page
        return {**kis, "FID_ETC_CLS_CODE": "", "FID_INPUT_HOUR_1": "153000", "FID_PW_DATA_INCU_YN": "N"}
    if tr_id == KIS_MINUTE_PAST:
        return {
            **kis,
            "FID_INPUT_DATE_1": last,
            "FID_INPUT_HOUR_1": "153000",
            "FID_PW_DATA_INCU_YN": "N",
            "FID_FAKE_TICK_INCU_YN": "",
        }
    if tr_id == KIS_DAILY:
        return {
            **kis,
            "FID_INPUT_DATE_1": first,
            "FID_INPUT_DATE_2": last,
            "FID_PERIOD_DIV_CODE": "D",
            "FID_ORG_ADJ_PRC": "1",  # 1 = as traded on this tr_id
        }
    if tr_id == KIWOOM_MINUTE:
        return {"stk_cd": piece.symbol, "tic_scope": "1", "upd_stkpc_tp": "0", "base_dt": last}
    if tr_id == KIWOOM_DAILY:
        return {"stk_cd": piece.symbol, "base_dt": last, "upd_stkpc_tp": "0"}
    raise ValueError(f"{tr_id} is not a chart the history-collector uses")


def max_pages(piece: Piece) -> int:
    """The most pages ``piece`` may take before paging is stopped as runaway."""
    if piece.timeframe == "1m":
        return MINUTE_MAX_PAGES
    return 5 + (piece.last - piece.first).days // DAILY_DAYS_PER_PAGE


def piece_start(piece: Piece) -> datetime:
    """The first instant ``piece`` covers: 09:00 KST of its day (``1m``), its first midnight (``1d``)."""
    at = SESSION_OPEN if piece.timeframe == "1m" else time()
    return datetime.combine(piece.first, at, KST)


def covered(page: Sequence[Candle], piece: Piece) -> bool:
    """True when a page's oldest candle reaches the piece's first instant: no later page is needed."""
    return bool(page) and min(candle.start for candle in page) <= piece_start(piece)


def in_piece(candle: Candle, piece: Piece) -> bool:
    """True for a candle of one of the piece's days."""
    return piece.first <= candle.start.astimezone(KST).date() <= piece.last
