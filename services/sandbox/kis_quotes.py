"""KIS quotation TRs (all GET), served from the simulated market as of the simulated clock.

- ``FHKST01010100`` inquire-price: ``output`` object, the current quote.
- ``FHKST01010300`` inquire-ccnl: ``output`` = the latest 30 trades, newest first.
- ``FHKST01010400`` inquire-daily-price: 30 rows D/W/M, newest first; ``FID_ORG_ADJ_PRC`` 1 = adjusted.
- ``FHKST03010100`` inquire-daily-itemchartprice: ``output1`` quote + ``output2`` <= 100 rows D/W/M/Y
  within [``FID_INPUT_DATE_1``, ``FID_INPUT_DATE_2``], newest first; ``FID_ORG_ADJ_PRC`` 0 = adjusted
  (the opposite of FHKST01010400, as on the real servers).
- ``FHKST03010200`` inquire-time-itemchartprice: 30 one-minute bars of *today*, newest first, ending at
  ``FID_INPUT_HOUR_1`` (a future time clamps to now). Page back by setting the hour to the oldest bar
  minus one minute.
- ``FHKST03010230`` inquire-time-dailychartprice (real only): 120 bars ending at ``FID_INPUT_DATE_1`` +
  ``FID_INPUT_HOUR_1``; with ``FID_PW_DATA_INCU_YN=Y`` earlier days fill the page.

Bars are labelled by their start minute (``stck_cntg_hour`` HHMM00). An unknown symbol answers rt_cd 0
with zero prices, and a chart without rows answers ``output2: [{}]`` (the quirk PyKis strips).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.sandbox.bars import Bar, DailyBar, direction_code, hhmmss, price_limits, tick_size
from services.sandbox.kis_envelope import KisCall, TrSpec, change_pct, input_error, num, ok, rate
from services.sandbox.market import Market
from services.sandbox.symbols import Symbol
from services.sandbox.wire import Reply

QUOTES = "/uapi/domestic-stock/v1/quotations"
MARKET_DIV_CODES = ("J", "NX", "UN")
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The current state of one symbol's session as of the simulated clock."""

    day: date | None
    bar: DailyBar | None  # None before the open (or with no history)
    prev_close: int

    @property
    def price(self) -> int:
        """Current price (the reference price before the open)."""
        return self.bar.close if self.bar else self.prev_close


def snapshot(market: Market, code: str, now: datetime) -> Snapshot:
    """Session state of ``code`` at ``now`` (last trading day's close on holidays)."""
    day = market.latest_trading_day(now.date())
    if day is None or market.symbol(code) is None:
        return Snapshot(None, None, 0)
    bar = market.daily_bar(code, day, now)
    return Snapshot(day, bar, bar.prev_close if bar else market.prev_close(code, day))


def _symbol(call: KisCall) -> tuple[str, Reply | None]:
    div = call.param("FID_COND_MRKT_DIV_CODE")
    if div not in MARKET_DIV_CODES:
        return "", input_error(call.tr_id, "FID_COND_MRKT_DIV_CODE")
    code = call.param("FID_INPUT_ISCD")
    if not code:
        return "", input_error(call.tr_id, "FID_INPUT_ISCD")
    return code.removeprefix("A"), None


def _date(call: KisCall, name: str) -> date | None:
    raw = call.param(name) or ""
    try:
        return datetime.strptime(raw, "%Y%m%d").date() if len(raw) == 8 else None
    except ValueError:
        return None


def _hour_s(call: KisCall) -> int | None:
    raw = call.param("FID_INPUT_HOUR_1") or ""
    if len(raw) != 6 or not raw.isdigit():
        return None
    hh, mm, ss = int(raw[:2]), int(raw[2:4]), int(raw[4:])
    return hh * 3600 + mm * 60 + ss if hh < 24 and mm < 60 and ss < 60 else None


def _quote_summary(sym: Symbol | None, snap: Snapshot) -> Row:
    bar, prev, price = snap.bar, snap.prev_close, snap.price
    return {
        "prdy_vrss": num(price - prev),
        "prdy_vrss_sign": direction_code(price, prev),
        "prdy_ctrt": change_pct(price, prev),
        "stck_prdy_clpr": num(prev),
        "acml_vol": num(bar.volume if bar else 0),
        "acml_tr_pbmn": num(bar.value if bar else 0),
        "hts_kor_isnm": sym.name_ko if sym else "",
        "stck_prpr": num(price),
    }


def _output1_daily(sym: Symbol | None, snap: Snapshot) -> Row:
    bar, prev = snap.bar, snap.prev_close
    upper, lower = price_limits(prev) if prev else (0, 0)
    shares = sym.listed_shares if sym else 0
    return {
        **_quote_summary(sym, snap),
        "stck_shrn_iscd": sym.code if sym else "",
        "prdy_vol": "0",
        "stck_mxpr": num(upper),
        "stck_llam": num(lower),
        "stck_oprc": num(bar.open if bar else 0),
        "stck_hgpr": num(bar.high if bar else 0),
        "stck_lwpr": num(bar.low if bar else 0),
        "stck_prdy_oprc": "0",
        "stck_prdy_hgpr": "0",
        "stck_prdy_lwpr": "0",
        "askp": num(snap.price + tick_size(snap.price) if sym else 0),
        "bidp": num(snap.price),
        "prdy_vrss_vol": "0",
        "vol_tnrt": rate(bar.volume / shares * 100 if bar and shares else 0),
        "stck_fcam": "100",
        "lstn_stcn": num(shares),
        "cpfn": num(shares * 100 // 100_000_000),
        "hts_avls": num(shares * snap.price // 100_000_000),
        "per": "12.50",
        "eps": num(snap.price * 8 // 100),
        "pbr": "1.20",
        "itewhol_loan_rmnd_ratem": "0.10",
    }


def inquire_price(call: KisCall) -> Reply:
    """FHKST01010100: the current quote of one symbol."""
    code, failed = _symbol(call)
    if failed:
        return failed
    market = call.state.market
    sym = market.symbol(code)
    snap = snapshot(market, code, call.now)
    out = _output1_daily(sym, snap)
    year = market.daily_bars(code, call.now.date() - timedelta(days=365), call.now.date(), call.now)
    hi = max(year, key=lambda b: b.high, default=None)
    lo = min(year, key=lambda b: b.low, default=None)
    out.update(
        {
            "iscd_stat_cls_code": "55",
            "marg_rate": "20.00",
            "rprs_mrkt_kor_name": sym.market if sym else "",
            "temp_stop_yn": "N",
            "stck_sdpr": num(snap.prev_close),
            "aspr_unit": num(tick_size(snap.price)),
            "wghn_avrg_stck_prc": num(snap.bar.value // snap.bar.volume if snap.bar else 0),
            "hts_frgn_ehrt": "50.00",
            "frgn_ntby_qty": "0",
            "pgtr_ntby_qty": "0",
            "bps": num(snap.price * 80 // 100),
            "stac_month": "12",
            "hts_deal_qty_unit_val": "1",
            "w52_hgpr": num(hi.high if hi else 0),
            "w52_hgpr_date": hi.day.strftime("%Y%m%d") if hi else "",
            "w52_lwpr": num(lo.low if lo else 0),
            "w52_lwpr_date": lo.day.strftime("%Y%m%d") if lo else "",
            "vi_cls_code": "N",
            "ovtm_vi_cls_code": "N",
            "invt_caful_yn": "N",
            "mrkt_warn_cls_code": "00",
            "short_over_yn": "N",
            "sltr_yn": "N",
            "ssts_yn": "Y",
        }
    )
    return ok(call.tr_id, output=out)


def inquire_ccnl(call: KisCall) -> Reply:
    """FHKST01010300: the latest 30 trades, newest first."""
    code, failed = _symbol(call)
    if failed:
        return failed
    market = call.state.market
    snap = snapshot(market, code, call.now)
    day = snap.day
    if day is not None and snap.bar is None:
        day = market.previous_trading_day(day)
    if day is None:
        return ok(call.tr_id, output=[])
    ticks = market.ticks(code, day, call.now)
    prev = market.prev_close(code, day)
    buy = sell = 0
    last = prev
    rows: list[Row] = []
    for tick in ticks:
        # tick rule: an uptick is a buyer-initiated trade
        if tick.price >= last:
            buy += tick.volume
        else:
            sell += tick.volume
        last = tick.price
        rows.append(
            {
                "stck_cntg_hour": hhmmss(tick.second),
                "stck_prpr": num(tick.price),
                "prdy_vrss": num(tick.price - prev),
                "prdy_vrss_sign": direction_code(tick.price, prev),
                "cntg_vol": num(tick.volume),
                "tday_rltv": rate(buy / sell * 100 if sell else 0.0),
                "prdy_ctrt": change_pct(tick.price, prev),
            }
        )
    return ok(call.tr_id, output=rows[-30:][::-1])


def _period(call: KisCall, allowed: str) -> str | None:
    value = call.param("FID_PERIOD_DIV_CODE")
    return value if value and len(value) == 1 and value in allowed else None


def inquire_daily_price(call: KisCall) -> Reply:
    """FHKST01010400: 30 daily/weekly/monthly rows, newest first (FID_ORG_ADJ_PRC 1 = adjusted)."""
    code, failed = _symbol(call)
    if failed:
        return failed
    period = _period(call, "DWM")
    if period is None:
        return input_error(call.tr_id, "FID_PERIOD_DIV_CODE")
    adj = call.param("FID_ORG_ADJ_PRC")
    if adj not in ("0", "1"):
        return input_error(call.tr_id, "FID_ORG_ADJ_PRC")
    today = call.now.date()
    span_days = {"D": 70, "W": 7 * 34, "M": 31 * 33}[period]
    bars = call.state.market.series(
        code, today - timedelta(days=span_days), today, period, adj == "1", call.now
    )
    rows: list[Row] = []
    for prev_bar, bar in zip([None, *bars[:-1]], bars, strict=True):
        rows.append(
            {
                "stck_bsop_date": bar.day.strftime("%Y%m%d"),
                "stck_oprc": num(bar.open),
                "stck_hgpr": num(bar.high),
                "stck_lwpr": num(bar.low),
                "stck_clpr": num(bar.close),
                "acml_vol": num(bar.volume),
                "prdy_vrss_vol_rate": rate((bar.volume / prev_bar.volume - 1) * 100 if prev_bar else 0.0),
                "prdy_vrss": num(bar.close - bar.prev_close),
                "prdy_vrss_sign": direction_code(bar.close, bar.prev_close),
                "prdy_ctrt": change_pct(bar.close, bar.prev_close),
                "hts_frgn_ehrt": "50.00",
                "frgn_ntby_qty": "0",
                "flng_cls_code": "00",
                "acml_prtt_rate": "0.00",
            }
        )
    return ok(call.tr_id, output=rows[-30:][::-1])


def inquire_daily_itemchartprice(call: KisCall) -> Reply:
    """FHKST03010100: <= 100 D/W/M/Y bars in [DATE_1, DATE_2], newest first (FID_ORG_ADJ_PRC 0 = adjusted)."""
    code, failed = _symbol(call)
    if failed:
        return failed
    start, end = _date(call, "FID_INPUT_DATE_1"), _date(call, "FID_INPUT_DATE_2")
    if start is None:
        return input_error(call.tr_id, "FID_INPUT_DATE_1")
    if end is None:
        return input_error(call.tr_id, "FID_INPUT_DATE_2")
    period = _period(call, "DWMY")
    if period is None:
        return input_error(call.tr_id, "FID_PERIOD_DIV_CODE")
    adj = call.param("FID_ORG_ADJ_PRC")
    if adj not in ("0", "1"):
        return input_error(call.tr_id, "FID_ORG_ADJ_PRC")
    market = call.state.market
    adjusted = adj == "0"
    bars = market.series(code, start, end, period, adjusted, call.now)[-100:][::-1]
    rows: list[Row] = [
        {
            "stck_bsop_date": bar.day.strftime("%Y%m%d"),
            "stck_clpr": num(bar.close),
            "stck_oprc": num(bar.open),
            "stck_hgpr": num(bar.high),
            "stck_lwpr": num(bar.low),
            "acml_vol": num(bar.volume),
            "acml_tr_pbmn": num(bar.value),
            "flng_cls_code": "00",
            "prtt_rate": "0.00",
            "mod_yn": "Y" if adjusted and market.adjust_factor(code, bar.day) > 1 else "N",
            "prdy_vrss_sign": direction_code(bar.close, bar.prev_close),
            "prdy_vrss": num(bar.close - bar.prev_close),
            "revl_issu_reas": "",
        }
        for bar in bars
    ]
    snap = snapshot(market, code, call.now)
    return ok(call.tr_id, output1=_output1_daily(market.symbol(code), snap), output2=rows or [{}])


def _minute_row(bar: Bar) -> Row:
    return {
        "stck_bsop_date": bar.day.strftime("%Y%m%d"),
        "stck_cntg_hour": f"{bar.minute // 60:02d}{bar.minute % 60:02d}00",
        "stck_prpr": num(bar.close),
        "stck_oprc": num(bar.open),
        "stck_hgpr": num(bar.high),
        "stck_lwpr": num(bar.low),
        "cntg_vol": num(bar.volume),
        "acml_tr_pbmn": num(bar.cum_value),
    }


def _bars_until(market: Market, code: str, day: date, cut_s: int, now: datetime) -> list[Bar]:
    return [bar for bar in market.minute_bars(code, day, now) if bar.minute * 60 <= cut_s]


def _now_s(now: datetime) -> int:
    return now.hour * 3600 + now.minute * 60 + now.second


def inquire_time_itemchartprice(call: KisCall) -> Reply:
    """FHKST03010200: 30 one-minute bars of today, newest first, ending at FID_INPUT_HOUR_1 (<= now)."""
    code, failed = _symbol(call)
    if failed:
        return failed
    hour_s = _hour_s(call)
    if hour_s is None:
        return input_error(call.tr_id, "FID_INPUT_HOUR_1")
    if call.param("FID_PW_DATA_INCU_YN") not in ("Y", "N"):
        return input_error(call.tr_id, "FID_PW_DATA_INCU_YN")
    market, now = call.state.market, call.now
    bars = _bars_until(market, code, now.date(), min(hour_s, _now_s(now)), now)[-30:][::-1]
    snap = snapshot(market, code, now)
    rows = [_minute_row(bar) for bar in bars]
    return ok(call.tr_id, output1=_quote_summary(market.symbol(code), snap), output2=rows or [{}])


def inquire_time_dailychartprice(call: KisCall) -> Reply:
    """FHKST03010230 (real only): 120 one-minute bars ending at DATE_1 + HOUR_1, newest first."""
    code, failed = _symbol(call)
    if failed:
        return failed
    day, hour_s = _date(call, "FID_INPUT_DATE_1"), _hour_s(call)
    if day is None:
        return input_error(call.tr_id, "FID_INPUT_DATE_1")
    if hour_s is None:
        return input_error(call.tr_id, "FID_INPUT_HOUR_1")
    include_past = (call.param("FID_PW_DATA_INCU_YN") or "N") == "Y"
    market, now = call.state.market, call.now
    oldest = now.date() - timedelta(days=call.state.settings.minute_history_days)
    if day >= now.date():
        day, hour_s = now.date(), min(hour_s, _now_s(now))
    rows: list[Row] = []
    cursor: date | None = day
    while cursor is not None and cursor >= oldest and len(rows) < 120:
        bars = (
            _bars_until(market, code, cursor, hour_s, now)
            if cursor == day
            else market.minute_bars(code, cursor)
        )
        rows.extend(_minute_row(bar) for bar in reversed(bars))
        if not include_past:
            break
        cursor = market.previous_trading_day(cursor)
    snap = snapshot(market, code, now)
    return ok(call.tr_id, output1=_quote_summary(market.symbol(code), snap), output2=rows[:120] or [{}])


def _get(handler: Callable[[KisCall], Reply], real_only: bool = False) -> TrSpec:
    return TrSpec("GET", handler, frozenset({"real"}) if real_only else frozenset({"real", "mock"}))


QUOTE_TRS: dict[str, dict[str, TrSpec]] = {
    f"{QUOTES}/inquire-price": {"FHKST01010100": _get(inquire_price)},
    f"{QUOTES}/inquire-ccnl": {"FHKST01010300": _get(inquire_ccnl)},
    f"{QUOTES}/inquire-daily-price": {"FHKST01010400": _get(inquire_daily_price)},
    f"{QUOTES}/inquire-daily-itemchartprice": {"FHKST03010100": _get(inquire_daily_itemchartprice)},
    f"{QUOTES}/inquire-time-itemchartprice": {"FHKST03010200": _get(inquire_time_itemchartprice)},
    f"{QUOTES}/inquire-time-dailychartprice": {
        "FHKST03010230": _get(inquire_time_dailychartprice, real_only=True)
    },
}
