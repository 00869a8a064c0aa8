"""Market data in one shape whichever broker served it: ``Candle`` and ``Tick``, and the pure functions that
read the brokers' bodies (``ApiResponse.data``) into them.

| function                 | provider / tr_id                 | rows               | timeframe |
|--------------------------|----------------------------------|--------------------|-----------|
| ``kis_minute_candles``   | KIS FHKST03010200 / FHKST03010230 | ``output2``       | ``1m``    |
| ``kis_daily_candles``    | KIS FHKST03010100                | ``output2``        | ``1d``    |
| ``kis_trades``           | KIS FHKST01010300                | ``output``         | (ticks)   |
| ``kiwoom_minute_candles``| Kiwoom ka10080                   | ``stk_min_pole_chart_qry`` | ``1m`` |
| ``kiwoom_daily_candles`` | Kiwoom ka10081                   | ``stk_dt_pole_chart_qry``  | ``1d`` |
| ``kiwoom_ticks``         | Kiwoom ka10079                   | ``stk_tic_chart_qry``      | (ticks) |

Units: prices in KRW and volumes in shares, both as ``int``; times are timezone-aware KST. A candle's
``start`` is the first instant it covers: the bar's start minute for ``1m`` (both brokers label minute bars
by their start), midnight KST of the trading day for ``1d``. Kiwoom prefixes prices with their direction
against the reference price (``"+70000"``, ``"-69900"``); the sign is dropped. Rows keep the brokers'
order (newest first), so the rows of consecutive ``paginate`` pages concatenate into one newest-first run.

The ``1m``/``1d`` labels assume the call asked for one-minute or daily bars (KIS ``FID_PERIOD_DIV_CODE=D``,
Kiwoom ``tic_scope=1``); ka10079 rows are single trades only with ``tic_scope=1``. Bodies do not say which
was asked, so that stays the caller's part. KIS chart bodies carry no stock code, hence ``symbol=``; Kiwoom
bodies carry ``stk_cd``, used unless ``symbol=`` is given. KIS's ``output2: [{}]`` (a chart without rows)
reads as no rows. A row that cannot be read raises ``MalformedPayload`` naming the tr_id, row and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from hubclient.errors import MalformedPayload
from hubclient.models import Provider

#: Korea Standard Time (UTC+9, no daylight saving).
KST = timezone(timedelta(hours=9), "KST")

Timeframe = Literal["1m", "1d"]
KisMinuteTrId = Literal["FHKST03010200", "FHKST03010230"]
Row = dict[str, Any]

# At most 18 digits: every count and KRW price fits with room (a 64-bit writer takes up to 19), and a
# 5,000-digit field would trip Python's int() limit.
_UNSIGNED = re.compile(r"[0-9]{1,18}")
_SIGNED = re.compile(r"[+-]?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar: prices in KRW, volume in shares, ``start`` KST-aware (see the module docstring)."""

    symbol: str
    timeframe: Timeframe
    start: datetime
    open: int
    high: int
    low: int
    close: int
    volume: int
    provider: Provider
    tr_id: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("Candle.start must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade: ``time`` KST-aware (to the second), ``price`` in KRW, ``volume`` in shares."""

    symbol: str
    time: datetime
    price: int
    volume: int
    provider: Provider
    tr_id: str

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("Tick.time must be timezone-aware")


# -- readers -------------------------------------------------------------------------------------------------
def _rows(data: Any, key: str, tr_id: str) -> list[tuple[int, Row]]:
    """(index, row) of the non-empty rows under ``key``; an empty ``{}`` row is KIS's "no rows" quirk."""
    if not isinstance(data, dict):
        raise MalformedPayload(
            tr_id, key, f"cannot be read: the body is a {type(data).__name__}, not an object"
        )
    rows = data.get(key)
    if not isinstance(rows, list):
        raise MalformedPayload(tr_id, key, "is missing or not a list")
    out: list[tuple[int, Row]] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MalformedPayload(tr_id, key, "holds a row that is not an object", row=index)
        if row:
            out.append((index, row))
    return out


def _text(row: Row, field: str, tr_id: str, index: int) -> str:
    value = row.get(field)
    if value is None:
        raise MalformedPayload(tr_id, field, "is missing", row=index)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedPayload(tr_id, field, f"is a {type(value).__name__}, not a string", row=index)
    return str(value).strip()


def _count(row: Row, field: str, tr_id: str, index: int, *, signed: bool = False) -> int:
    """A non-negative integer field; with ``signed`` a leading direction sign is allowed and dropped."""
    text = _text(row, field, tr_id, index)
    if not (_SIGNED if signed else _UNSIGNED).fullmatch(text):
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
        raise MalformedPayload(
            tr_id, field, f"is not an unsigned integer of 18 digits at most: {shown!r}", row=index
        )
    return abs(int(text))


def _instant(text: str, fmt: str, field: str, tr_id: str, index: int) -> datetime:
    digits = {"%Y%m%d": 8, "%H%M%S": 6, "%Y%m%d%H%M%S": 14}[fmt]
    try:
        if len(text) != digits or not text.isdigit():
            raise ValueError(text)
        return datetime.strptime(text, fmt).replace(tzinfo=KST)
    except ValueError:
        raise MalformedPayload(tr_id, field, f"is not a {fmt} time: {text!r}", row=index) from None


def _day_start(row: Row, field: str, tr_id: str, index: int) -> datetime:
    return _instant(_text(row, field, tr_id, index), "%Y%m%d", field, tr_id, index)


def _kiwoom_symbol(data: Any, symbol: str | None, tr_id: str) -> str:
    if symbol is not None:
        return symbol
    code = data.get("stk_cd") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code.strip():
        raise MalformedPayload(tr_id, "stk_cd", "is missing; pass symbol=")
    return code.strip()


def _ohlcv(
    row: Row, names: tuple[str, str, str, str, str], tr_id: str, index: int, *, signed: bool
) -> tuple[int, int, int, int, int]:
    o, h, lo, c, v = names
    return (
        _count(row, o, tr_id, index, signed=signed),
        _count(row, h, tr_id, index, signed=signed),
        _count(row, lo, tr_id, index, signed=signed),
        _count(row, c, tr_id, index, signed=signed),
        _count(row, v, tr_id, index),
    )


_KIS_BAR = ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_prpr", "cntg_vol")
_KIS_DAY = ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_clpr", "acml_vol")
_KIWOOM_BAR = ("open_pric", "high_pric", "low_pric", "cur_prc", "trde_qty")


# -- KIS -----------------------------------------------------------------------------------------------------
def kis_minute_candles(data: Any, *, symbol: str, tr_id: KisMinuteTrId = "FHKST03010200") -> list[Candle]:
    """``1m`` candles from a FHKST03010200 or FHKST03010230 body (``output2``), newest first."""
    if tr_id not in ("FHKST03010200", "FHKST03010230"):
        raise ValueError(f"{tr_id} is not a KIS minute chart")
    candles: list[Candle] = []
    for index, row in _rows(data, "output2", tr_id):
        day = _text(row, "stck_bsop_date", tr_id, index)
        hour = _text(row, "stck_cntg_hour", tr_id, index)
        start = _instant(day + hour, "%Y%m%d%H%M%S", "stck_bsop_date+stck_cntg_hour", tr_id, index)
        o, h, lo, c, v = _ohlcv(row, _KIS_BAR, tr_id, index, signed=False)
        candles.append(Candle(symbol, "1m", start, o, h, lo, c, v, Provider.KIS, tr_id))
    return candles


def kis_daily_candles(data: Any, *, symbol: str) -> list[Candle]:
    """``1d`` candles from a FHKST03010100 body asked with ``FID_PERIOD_DIV_CODE=D``, newest first."""
    tr_id = "FHKST03010100"
    candles: list[Candle] = []
    for index, row in _rows(data, "output2", tr_id):
        start = _day_start(row, "stck_bsop_date", tr_id, index)
        o, h, lo, c, v = _ohlcv(row, _KIS_DAY, tr_id, index, signed=False)
        candles.append(Candle(symbol, "1d", start, o, h, lo, c, v, Provider.KIS, tr_id))
    return candles


def kis_trades(data: Any, *, symbol: str, day: date) -> list[Tick]:
    """Ticks from a FHKST01010300 body (``output``, latest 30 trades, newest first).

    The rows carry only HHMMSS, so ``day`` is the trading day they belong to (before the open the broker
    still answers the previous trading day's last trades).
    """
    tr_id = "FHKST01010300"
    ticks: list[Tick] = []
    for index, row in _rows(data, "output", tr_id):
        hour = _text(row, "stck_cntg_hour", tr_id, index)
        clock = _instant(hour, "%H%M%S", "stck_cntg_hour", tr_id, index)
        when = datetime.combine(day, clock.time(), KST)
        price = _count(row, "stck_prpr", tr_id, index)
        volume = _count(row, "cntg_vol", tr_id, index)
        ticks.append(Tick(symbol, when, price, volume, Provider.KIS, tr_id))
    return ticks


# -- Kiwoom --------------------------------------------------------------------------------------------------
def kiwoom_minute_candles(data: Any, *, symbol: str | None = None) -> list[Candle]:
    """``1m`` candles from a ka10080 body asked with ``tic_scope=1``, signs dropped, newest first."""
    tr_id = "ka10080"
    rows = _rows(data, "stk_min_pole_chart_qry", tr_id)
    code = _kiwoom_symbol(data, symbol, tr_id)
    candles: list[Candle] = []
    for index, row in rows:
        start = _instant(_text(row, "cntr_tm", tr_id, index), "%Y%m%d%H%M%S", "cntr_tm", tr_id, index)
        o, h, lo, c, v = _ohlcv(row, _KIWOOM_BAR, tr_id, index, signed=True)
        candles.append(Candle(code, "1m", start, o, h, lo, c, v, Provider.KIWOOM, tr_id))
    return candles


def kiwoom_daily_candles(data: Any, *, symbol: str | None = None) -> list[Candle]:
    """``1d`` candles from a ka10081 body, signs dropped, newest first."""
    tr_id = "ka10081"
    rows = _rows(data, "stk_dt_pole_chart_qry", tr_id)
    code = _kiwoom_symbol(data, symbol, tr_id)
    candles: list[Candle] = []
    for index, row in rows:
        start = _day_start(row, "dt", tr_id, index)
        o, h, lo, c, v = _ohlcv(row, _KIWOOM_BAR, tr_id, index, signed=True)
        candles.append(Candle(code, "1d", start, o, h, lo, c, v, Provider.KIWOOM, tr_id))
    return candles


def kiwoom_ticks(data: Any, *, symbol: str | None = None) -> list[Tick]:
    """Ticks from a ka10079 body asked with ``tic_scope=1`` (one trade a row), signs dropped, newest first."""
    tr_id = "ka10079"
    rows = _rows(data, "stk_tic_chart_qry", tr_id)
    code = _kiwoom_symbol(data, symbol, tr_id)
    ticks: list[Tick] = []
    for index, row in rows:
        when = _instant(_text(row, "cntr_tm", tr_id, index), "%Y%m%d%H%M%S", "cntr_tm", tr_id, index)
        price = _count(row, "cur_prc", tr_id, index, signed=True)
        volume = _count(row, "trde_qty", tr_id, index)
        ticks.append(Tick(code, when, price, volume, Provider.KIWOOM, tr_id))
    return ticks
