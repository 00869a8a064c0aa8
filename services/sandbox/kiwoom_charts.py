"""Kiwoom chart TRs on ``POST /api/dostk/chart``, newest row first, paged with ``cont-yn``/``next-key``.

- ``ka10079`` ticks (``tic_scope`` 1/3/5/10/30 trades per row), today and the previous week; prices
  unsigned.
- ``ka10080`` minute bars (``tic_scope`` 1/3/5/10/15/30/45/60 minutes, buckets from 09:00, labelled by
  their start), from ``base_dt`` (default today; today is partial) back across earlier days for
  ``minute_history_days``. Prices carry a sign against the day's reference price (``-78800``), as the real
  server sends them; take ``abs()``.
- ``ka10081`` daily (``base_dt`` required), ``ka10082`` weekly, ``ka10083`` monthly, ``ka10094`` yearly:
  unsigned prices, signed ``pred_pre``; back to the market's history start. ``trde_prica`` is in millions
  of KRW for daily rows and in KRW for weekly/monthly/yearly rows, as the official spec states.

``upd_stkpc_tp`` "1" returns split-adjusted prices. Stock codes may carry the ``_NX``/``_AL`` venue suffix
(same data). Page sizes are settings (900 ticks/minutes, 600 days by default).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from services.sandbox.bars import adjust_minute, aggregate, direction_code, hhmmss, minute_buckets, round_tick
from services.sandbox.kiwoom_envelope import (
    Handler,
    KiwoomCall,
    decode_next_key,
    encode_next_key,
    error,
    ok,
)
from services.sandbox.market import Market
from services.sandbox.wire import Reply

Row = dict[str, Any]
TICK_SCOPES = ("1", "3", "5", "10", "30")
MINUTE_SCOPES = ("1", "3", "5", "10", "15", "30", "45", "60")
TICK_HISTORY_DAYS = 7


def signed(value: int, reference: int) -> str:
    """Kiwoom signed number: '+' above the reference, '-' below, bare when equal."""
    if value > reference:
        return f"+{value}"
    if value < reference:
        return f"-{value}"
    return str(value)


def diff(value: int) -> str:
    """A signed difference: '+600', '-600' or '0'."""
    return f"+{value}" if value > 0 else str(value)


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _common(call: KiwoomCall, scopes: tuple[str, ...] | None) -> tuple[tuple[str, str, str], Reply | None]:
    """(stock code, scope, adjusted flag) from the body, or an error reply."""
    body = call.body
    for name in ("stk_cd", "upd_stkpc_tp", *(("tic_scope",) if scopes else ())):
        if name not in body:
            return ("", "", ""), error(1511, call.api_id, extra=name)
        if not isinstance(body[name], str):
            return ("", "", ""), error(1517, call.api_id, extra=name)
    code = _text(body, "stk_cd") or ""
    code = code.removesuffix("_NX").removesuffix("_AL")
    if call.state.market.symbol(code) is None:
        return ("", "", ""), error(1902, call.api_id)
    adjusted = _text(body, "upd_stkpc_tp") or ""
    if adjusted not in ("0", "1"):
        return ("", "", ""), error(1517, call.api_id, extra="upd_stkpc_tp")
    scope = _text(body, "tic_scope") or ""
    if scopes and scope not in scopes:
        return ("", "", ""), error(1517, call.api_id, extra="tic_scope")
    return (code, scope, adjusted), None


def _base_date(call: KiwoomCall, required: bool) -> tuple[date | None, Reply | None]:
    raw = call.body.get("base_dt")
    if raw in (None, "") and not required:
        return call.now.date(), None
    if raw in (None, ""):
        return None, error(1511, call.api_id, extra="base_dt")
    try:
        day = datetime.strptime(str(raw), "%Y%m%d").date() if len(str(raw)) == 8 else None
    except ValueError:
        day = None
    if day is None:
        return None, error(1517, call.api_id, extra="base_dt")
    return min(day, call.now.date()), None


def _page(
    call: KiwoomCall,
    binding: tuple[str, ...],
    start: date,
    oldest: date,
    rows_of_day: Callable[[date], list[Row]],
    size: int,
) -> tuple[list[Row], str | None, Reply | None]:
    """Walk days backwards from ``start`` (or the next-key) collecting ``size`` rows, newest first."""
    market = call.state.market
    day: date | None = start
    index = 0
    if call.continuing:
        position = decode_next_key(call.headers.get("next-key", ""), binding)
        if position is None:
            return [], None, error(1517, call.api_id, extra="next-key")
        day, index = position
    rows: list[Row] = []
    while day is not None and day >= oldest:
        day_rows = rows_of_day(day) if market.is_trading_day(day) else []
        take = day_rows[index : index + size - len(rows)]
        rows.extend(take)
        index += len(take)
        if len(rows) == size:
            if index < len(day_rows):
                return rows, encode_next_key(day, index, binding), None
            earlier = market.previous_trading_day(day)
            more = earlier is not None and earlier >= oldest
            return rows, encode_next_key(earlier, 0, binding) if more and earlier else None, None
        day, index = market.previous_trading_day(day), 0
    return rows, None, None


def ka10079(call: KiwoomCall) -> Reply:
    """Tick chart: rows of ``tic_scope`` trades, newest first."""
    (code, scope, adjusted), failed = _common(call, TICK_SCOPES)
    if failed:
        return failed
    market, now, per_row = call.state.market, call.now, int(scope)

    def rows_of_day(day: date) -> list[Row]:
        ticks = market.ticks(code, day, now)
        factor = market.adjust_factor(code, day) if adjusted == "1" else 1
        ref = market.prev_close(code, day)
        ref = round_tick(ref / factor) if factor > 1 else ref
        out: list[Row] = []
        for start in range(0, len(ticks), per_row):
            group = ticks[start : start + per_row]
            prices = [round_tick(t.price / factor) if factor > 1 else t.price for t in group]
            out.append(
                {
                    "cur_prc": str(prices[-1]),
                    "trde_qty": str(sum(t.volume for t in group) * factor),
                    "cntr_tm": f"{day:%Y%m%d}{hhmmss(group[-1].second)}",
                    "open_pric": str(prices[0]),
                    "high_pric": str(max(prices)),
                    "low_pric": str(min(prices)),
                    "pred_pre": diff(prices[-1] - ref),
                    "pred_pre_sig": direction_code(prices[-1], ref),
                }
            )
        return out[::-1]

    binding = (call.api_id, code, scope, adjusted)
    oldest = now.date() - timedelta(days=TICK_HISTORY_DAYS)
    size = call.state.settings.kiwoom_tick_rows_per_page
    rows, next_key, failed = _page(call, binding, now.date(), oldest, rows_of_day, size)
    if failed:
        return failed
    return ok(call.api_id, {"stk_cd": code, "last_tic_cnt": "", "stk_tic_chart_qry": rows}, next_key)


def ka10080(call: KiwoomCall) -> Reply:
    """Minute chart: signed prices, newest first, continuing into earlier days."""
    (code, scope, adjusted), failed = _common(call, MINUTE_SCOPES)
    if failed:
        return failed
    base, failed = _base_date(call, required=False)
    if failed or base is None:
        return failed or error(1517, call.api_id)
    market, now = call.state.market, call.now

    def rows_of_day(day: date) -> list[Row]:
        factor = market.adjust_factor(code, day) if adjusted == "1" else 1
        bars = [adjust_minute(b, factor) for b in market.minute_bars(code, day, now)]
        ref = market.prev_close(code, day)
        ref = round_tick(ref / factor) if factor > 1 else ref
        return [
            {
                "cur_prc": signed(b.close, ref),
                "trde_qty": str(b.volume),
                "cntr_tm": f"{day:%Y%m%d}{b.minute // 60:02d}{b.minute % 60:02d}00",
                "open_pric": signed(b.open, ref),
                "high_pric": signed(b.high, ref),
                "low_pric": signed(b.low, ref),
                "acc_trde_qty": str(b.cum_volume),
                "pred_pre": diff(b.close - ref),
                "pred_pre_sig": direction_code(b.close, ref),
            }
            for b in reversed(minute_buckets(bars, int(scope)))
        ]

    binding = (call.api_id, code, scope, adjusted, str(call.body.get("base_dt", "")))
    oldest = now.date() - timedelta(days=call.state.settings.minute_history_days)
    size = call.state.settings.kiwoom_minute_rows_per_page
    rows, next_key, failed = _page(call, binding, base, oldest, rows_of_day, size)
    if failed:
        return failed
    return ok(call.api_id, {"stk_cd": code, "stk_min_pole_chart_qry": rows}, next_key)


_PERIODS = {
    "ka10081": ("D", "stk_dt_pole_chart_qry"),
    "ka10082": ("W", "stk_stk_pole_chart_qry"),
    "ka10083": ("M", "stk_mth_pole_chart_qry"),
    "ka10094": ("Y", "stk_yr_pole_chart_qry"),
}


def period_chart(call: KiwoomCall) -> Reply:
    """Daily/weekly/monthly/yearly chart up to ``base_dt``, newest first."""
    (code, _scope, adjusted), failed = _common(call, None)
    if failed:
        return failed
    base, failed = _base_date(call, required=True)
    if failed or base is None:
        return failed or error(1517, call.api_id)
    period, list_key = _PERIODS[call.api_id]
    market: Market = call.state.market
    bars = market.series(code, market.history_start, base, "D", adjusted == "1", call.now)
    sym = market.symbol(code)
    shares = sym.listed_shares if sym else 1
    grouped = aggregate(bars, period)[::-1]
    value_unit = 1_000_000 if period == "D" else 1
    rows = [
        {
            "cur_prc": str(b.close),
            "trde_qty": str(b.volume),
            "trde_prica": str(b.value // value_unit),
            "dt": f"{b.day:%Y%m%d}",
            "open_pric": str(b.open),
            "high_pric": str(b.high),
            "low_pric": str(b.low),
            "pred_pre": diff(b.close - b.prev_close),
            "pred_pre_sig": direction_code(b.close, b.prev_close),
            "trde_tern_rt": f"+{b.volume / shares * 100:.2f}",
        }
        for b in grouped
    ]
    by_day = {row["dt"]: i for i, row in enumerate(rows)}
    binding = (call.api_id, code, adjusted, f"{base:%Y%m%d}")
    offset = 0
    if call.continuing:
        position = decode_next_key(call.headers.get("next-key", ""), binding)
        if position is None or f"{position[0]:%Y%m%d}" not in by_day:
            return error(1517, call.api_id, extra="next-key")
        offset = by_day[f"{position[0]:%Y%m%d}"]
    size = call.state.settings.kiwoom_daily_rows_per_page
    page = rows[offset : offset + size]
    next_key = None
    if offset + size < len(rows):
        next_day = datetime.strptime(rows[offset + size]["dt"], "%Y%m%d").date()
        next_key = encode_next_key(next_day, 0, binding)
    return ok(call.api_id, {"stk_cd": code, list_key: page}, next_key)


CHART_APIS: dict[str, Handler] = {
    "ka10079": ka10079,
    "ka10080": ka10080,
    **{api_id: period_chart for api_id in _PERIODS},
}
