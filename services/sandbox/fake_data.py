"""Plausible values for a field, chosen by its name: the data of the endpoints without a dedicated simulation.

Every value is a pure function of the ``Basis`` (what the request named: symbol, reference price, day,
account, a seed taken from the request), the row number and the field name, so the same request always
gets the same answer and consecutive pages of one list fit together. Values are strings, as both brokers
send them. The name decides the kind of value, first match wins:

- a field the request also carries (case-insensitive) echoes the request's value;
- ``..._yn`` Y/N; ``sign``/``..._sig`` the direction code (1-5); dates (``..._dt``, ``...date``, ``ymd``)
  YYYYMMDD going back one weekday per row; times (``hour``, ``..._tm``, ``tmd``, ``hms``) HHMMSS;
- names (``name``, ``..._nm``, ``isnm``) a symbol, sector, broker or theme name; account numbers
  (``cano``, ``acnt_no``) the basis account; order numbers (``odno``, ``ord_no``, ``orgno``); symbol
  codes (``iscd``, ``pdno``, ``stk_cd``, ``symb``);
- ``rank`` the row number; currencies (``crcy``); other codes (``..._cd``, ``..._tp``, ``dvsn``, ``cls``) a
  two-digit code;
- rates (``rate``, ``ctrt``, ``..._rt``) percent with two decimals; differences (``vrss``, ``pred_pre``,
  ``diff``) signed KRW; quantities (``vol``, ``qty``, ``cnt``) shares; amounts (``amt``, ``pbmn``,
  ``prica``, ``tot``, ``evlu``) KRW; prices (``prpr``, ``pric``, ``prc``, ``oprc``, ``hgpr``, ``lwpr``,
  ``last``, ...) on valid KRX ticks (four decimals for overseas markets), open/high/low/limits/reference
  of the row's quote as the name says; anything else a small number.

Kiwoom styles prices as its read answers do: signed against the reference price (``+71000``), rates
and differences with an explicit ``+``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

from services.sandbox.bars import direction_code, hhmmss, price_limits, round_tick, tick_size
from services.sandbox.symbols import SYMBOLS

SECTORS = (
    "종합(KOSPI)",
    "대형주",
    "중형주",
    "소형주",
    "음식료품",
    "섬유의복",
    "화학",
    "전기전자",
    "운수장비",
    "금융업",
)
BROKERS = ("키움증권", "한국투자증권", "미래에셋증권", "삼성증권", "NH투자증권", "KB증권", "신한투자증권")
THEMES = ("2차전지", "반도체", "인공지능", "바이오", "조선", "방산", "게임", "엔터테인먼트")
OVERSEAS = (
    ("AAPL", "애플"),
    ("MSFT", "마이크로소프트"),
    ("NVDA", "엔비디아"),
    ("TSLA", "테슬라"),
    ("AMZN", "아마존"),
)
_CODES = sorted(SYMBOLS)
_PRICES: tuple[str, ...] = (
    "prpr",
    "pric",
    "prc",
    "price",
    "clpr",
    "clos",
    "oprc",
    "hgpr",
    "lwpr",
    "mxpr",
    "llam",
    "sdpr",
    "unpr",
)
_PRICES += ("last", "open", "high", "low", "nav", "bidp", "askp", "avg")
_AMOUNTS = ("amt", "pbmn", "prica", "tot", "evlu", "asst", "dnca", "entr", "cash", "pfls", "avls")


class Style(StrEnum):
    """How numbers are written: KIS domestic, KIS overseas (decimals), Kiwoom (signed)."""

    KIS = "kis"
    KIS_OVERSEAS = "kis_overseas"
    KIWOOM = "kiwoom"


def mix(*parts: object) -> int:
    """A stable 64-bit number from the parts (the same parts give the same number in every process)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Basis:
    """What an answer is built around; ``price`` is the reference price (KRW, or cents x100 overseas)."""

    seed: int
    style: Style
    day: date  # the newest row's day
    account: str  # eight digits
    code: str = ""  # the request's symbol, "" when it names none
    name: str = ""
    price: int = 0  # reference (previous close) of ``code``; 0 = derive per row
    params: Mapping[str, str] = field(default_factory=dict)  # the request, keys lower-cased


@dataclass(frozen=True, slots=True)
class RowQuote:
    """One row's symbol and prices, kept consistent across its fields."""

    code: str
    name: str
    ref: int
    open: int
    high: int
    low: int
    close: int
    volume: int


def weekday_back(day: date, rows: int) -> date:
    """The weekday ``rows`` weekdays before ``day`` (``day`` itself, moved off a weekend, for 0)."""
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    for _ in range(rows):
        day -= timedelta(days=3 if day.weekday() == 0 else 1)
    return day


def row_quote(basis: Basis, row: int) -> RowQuote:
    """The symbol and prices of row ``row``: the request's symbol on every row, else one symbol per row."""
    if basis.code:
        code, name = basis.code, basis.name
        ref = basis.price or 1_000 + mix(basis.seed, "ref") % 200_000
    elif basis.style is Style.KIS_OVERSEAS:
        code, name = OVERSEAS[(basis.seed + row) % len(OVERSEAS)]
        ref = 100_000 + mix(code, "ref") % 5_000_000  # 10.0000 .. 510.0000
    else:
        sym = SYMBOLS[_CODES[(basis.seed + row) % len(_CODES)]]
        code, name, ref = sym.code, sym.name_ko, sym.base_price
    noise = mix(basis.seed, row, "quote")
    change = ((noise % 1_001) - 500) / 10_000  # -5 % .. +5 %
    close = _on_tick(ref * (1 + change), basis.style)
    opened = _on_tick(ref * (1 + change * ((noise >> 12) % 7) / 10), basis.style)
    spread = _on_tick(ref * (1 + (noise >> 20) % 200 / 10_000), basis.style) - ref
    volume = 1_000 + (noise >> 28) % 5_000_000
    high, low = max(close, opened) + spread, max(1, min(close, opened) - spread)
    return RowQuote(code, name, ref, opened, high, low, close, volume)


def _on_tick(price: float, style: Style) -> int:
    return max(1, round(price)) if style is Style.KIS_OVERSEAS else round_tick(price)


def _money(value: int, style: Style) -> str:
    return f"{value / 10_000:.4f}" if style is Style.KIS_OVERSEAS else str(value)


def _signed(value: int, reference: int, text: str) -> str:
    return f"+{text}" if value > reference else (f"-{text}" if value < reference else text)


def _price_of(lowered: str, quote: RowQuote) -> int:
    if any(key in lowered for key in ("oprc", "open")):
        return quote.open
    if any(key in lowered for key in ("hgpr", "high", "hgst")):
        return quote.high
    if any(key in lowered for key in ("lwpr", "low", "lwst")):
        return quote.low
    if any(key in lowered for key in ("mxpr", "upl_pric", "uplmt")):
        return price_limits(quote.ref)[0]
    if any(key in lowered for key in ("llam", "lst_pric", "lwlmt")):
        return price_limits(quote.ref)[1]
    if any(key in lowered for key in ("sdpr", "base_pric", "prdy_clpr", "pred_close", "base")):
        return quote.ref
    if any(key in lowered for key in ("avg", "pchs", "pur_pric", "buy_uv")):
        return quote.open  # what a holding cost: not today's close
    if any(key in lowered for key in ("askp", "sel_fpr", "sel_1")):
        return quote.close + tick_size(quote.close)  # the best ask sits a tick above the last trade
    return quote.close


def _price(lowered: str, quote: RowQuote, style: Style) -> str:
    price = _price_of(lowered, quote)
    text = _money(price, style)
    return _signed(price, quote.ref, text) if style is Style.KIWOOM else text


def _diff(quote: RowQuote, style: Style) -> str:
    delta = quote.close - quote.ref
    text = _money(abs(delta), style)
    if style is Style.KIWOOM:
        return _signed(quote.close, quote.ref, text)
    return f"-{text}" if delta < 0 else text


def _rate(quote: RowQuote, style: Style) -> str:
    pct = (quote.close - quote.ref) / quote.ref * 100 if quote.ref else 0.0
    return f"+{pct:.2f}" if style is Style.KIWOOM and pct > 0 else f"{pct:.2f}"


def _name(lowered: str, quote: RowQuote, noise: int) -> str:
    if "inds" in lowered or "sect" in lowered or "upjong" in lowered:
        return SECTORS[noise % len(SECTORS)]
    if "mmcm" in lowered or "memb" in lowered or "brkr" in lowered or "scts" in lowered:
        return BROKERS[noise % len(BROKERS)]
    if "thema" in lowered or "thme" in lowered:
        return THEMES[noise % len(THEMES)]
    return quote.name


def is_date_field(lowered: str) -> bool:
    """True for a lower-cased field name that holds a date (YYYYMMDD)."""
    return lowered in ("dt", "date", "day") or lowered.endswith(("_dt", "date", "ymd", "_day"))


def _is_time(lowered: str) -> bool:
    return lowered.endswith(("_tm", "tmd", "hms", "_time", "hour", "hour_1")) or lowered in ("tm", "time")


def _contains(lowered: str, keys: tuple[str, ...]) -> bool:
    return any(key in lowered for key in keys)


def value(name: str, basis: Basis, row: int) -> str:
    """The value of field ``name`` on row ``row`` (0 = newest / first) of an answer built on ``basis``."""
    lowered = name.lower()
    echoed = basis.params.get(lowered)
    if echoed is not None and not lowered.startswith("ctx_area"):
        return echoed
    quote = row_quote(basis, row)
    noise = mix(basis.seed, row, lowered)
    style = basis.style
    if lowered.endswith("yn"):
        return "Y" if noise % 3 == 0 else "N"
    if "sign" in lowered or lowered.endswith("_sig"):
        return direction_code(quote.close, quote.ref)
    if is_date_field(lowered):
        return weekday_back(basis.day, row).strftime("%Y%m%d")
    if _is_time(lowered):
        return hhmmss(15 * 3600 + 30 * 60 - 60 * row - noise % 60)
    if _contains(lowered, ("name", "isnm")) or lowered.endswith("_nm"):
        return _name(lowered, quote, noise)
    if lowered in ("cano", "acnt_no", "acct_no") or lowered.endswith("acnt_no"):
        return basis.account
    if _contains(lowered, ("odno", "ord_no", "orgno", "ord_gno")):
        return f"{noise % 10**10:010d}"
    if _contains(lowered, ("iscd", "pdno", "stk_cd", "symb", "rsym", "item_cd", "shrn")):
        return quote.code
    if "rank" in lowered:
        return str(row + 1)
    if "crcy" in lowered:
        return "USD" if style is Style.KIS_OVERSEAS else "KRW"
    if lowered.endswith(("_cd", "_tp", "code", "dvsn", "cls")):
        return f"{1 + noise % 9:02d}"
    if _contains(lowered, ("rate", "ctrt", "ratio", "tnrt", "ehrt", "erng")) or lowered.endswith("_rt"):
        return _rate(quote, style)
    if _contains(lowered, ("vrss", "pred_pre", "diff")) or lowered.endswith("_pre"):
        return _diff(quote, style)
    if _contains(lowered, ("vol", "qty", "cnt", "stcn", "rmnd", "req")):
        traded = _contains(lowered, ("vol", "trde_qty", "acml"))
        return str(quote.volume if traded else 1 + noise % 10_000)
    if _contains(lowered, _AMOUNTS) or lowered.endswith("_pl"):
        return _money(quote.close * (1 + noise % 5_000), style)
    if _contains(lowered, _PRICES) or lowered.endswith(("_uv", "_bid")):
        return _price(lowered, quote, style)
    return str(noise % 1_000)
