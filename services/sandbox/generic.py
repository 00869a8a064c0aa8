"""What the generic KIS and Kiwoom answers share: the basis taken from a request, and filling the parts.

``request_basis`` reads the request's symbol (a known symbol brings its name and the simulated market's
previous close as the reference price), its newest date (capped at today; none = the latest trading day)
and an account number, and seeds everything else with the request itself (paging keys left out), so the
same request gets the same answer. ``fill`` builds the parts of ``shapes`` from ``fake_data``: objects from
row 0, a summary list of one row, and the list rows ``[offset, offset + count)`` of the paged list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from services.sandbox.fake_data import Basis, Style, is_date_field, mix, value
from services.sandbox.market import Market
from services.sandbox.shapes import Layout, Part

SYMBOL_FIELDS = ("fid_input_iscd", "pdno", "stk_cd", "ovrs_pdno", "symb", "srs_cd")
PAGING_FIELDS = ("ctx_area", "tr_cont")


@dataclass(frozen=True, slots=True)
class Page:
    """Which rows of the paged list an answer holds."""

    offset: int
    count: int


def _code(raw: str, style: Style) -> str:
    if style is Style.KIS_OVERSEAS:
        return raw.strip().upper()
    code = raw.strip().removesuffix("_NX").removesuffix("_AL")
    return code[1:] if len(code) == 7 and code[0] in "AQ" else code


def _day(params: Mapping[str, str], today: date, market: Market) -> date:
    days = []
    for name, raw in params.items():
        if is_date_field(name) and len(raw) == 8 and raw.isdigit():
            try:
                days.append(datetime.strptime(raw, "%Y%m%d").date())
            except ValueError:
                continue
    if days:
        return min(max(days), today)
    return market.latest_trading_day(today) or today


def request_basis(
    params: Mapping[str, Any],
    style: Style,
    market: Market,
    today: date,
    seed_parts: tuple[str, ...],
    owner: str,
) -> Basis:
    """The basis of an answer to ``params`` (any case), seeded by ``seed_parts``; ``owner`` (the appkey)
    picks the account number when the request names none."""
    text = {
        str(k).lower(): str(v)
        for k, v in params.items()
        if isinstance(v, str | int | float) and not str(k).lower().startswith(PAGING_FIELDS)
    }
    seed = mix(*seed_parts, *sorted(text.items()))
    day = _day(text, today, market)
    account = text.get("cano", "")
    if len(account) != 8 or not account.isdigit():
        account = f"{mix(owner, 'account') % 10**8:08d}"
    raw = next((text[name] for name in SYMBOL_FIELDS if text.get(name)), "")
    code = _code(raw, style)
    sym = market.symbol(code) if style is not Style.KIS_OVERSEAS else None
    if sym is not None:
        price = market.prev_close(code, day)
        return Basis(seed, style, day, account, code, sym.name_ko, price, text)
    if style is Style.KIS_OVERSEAS and code:
        return Basis(seed, style, day, account, code, code, 100_000 + mix(code) % 5_000_000, text)
    return Basis(seed, style, day, account, params=text)


def fill(parts: tuple[Part, ...], basis: Basis, page: Page) -> dict[str, Any]:
    """The answer's parts (keyed by name; key "" merged at the top level) with the rows of ``page``."""
    out: dict[str, Any] = {}
    for part in parts:
        if part.layout is Layout.ROWS:
            rows = range(page.offset, page.offset + page.count)
            on = replace(basis, code="", name="", price=0) if part.varied else basis
            out[part.key] = [{name: value(name, on, row) for name in part.fields} for row in rows]
            continue
        obj = {name: value(name, basis, 0) for name in part.fields}
        if part.layout is Layout.SUMMARY:
            out[part.key] = [obj]
        elif part.key:
            out[part.key] = obj
        else:
            out.update(obj)
    return out


def has_rows(parts: tuple[Part, ...]) -> bool:
    """True when the answer has a list to page."""
    return any(part.layout is Layout.ROWS for part in parts)


def order_side(name_ko: str) -> str:
    """The ledger's side of an order endpoint by its Korean name: buy, sell, modify, cancel or order."""
    for word, side in (("정정", "modify"), ("취소", "cancel"), ("매수", "buy"), ("매도", "sell")):
        if word in name_ko:
            return side
    return "order"
