"""The pure rules behind the generic answers: routing per environment, values by field name, answer shapes."""

from __future__ import annotations

import re
from datetime import date

import pytest

from hubclient.catalog import TrSpec, lookup
from hubclient.models import Provider
from services.sandbox.bars import price_limits, tick_size
from services.sandbox.endpoints import NOT_LIVE, build_kis_index, resolve_kis, resolve_kiwoom
from services.sandbox.fake_data import Basis, Style, value, weekday_back
from services.sandbox.generic import order_side
from services.sandbox.generic_kis import ctx_width
from services.sandbox.shapes import Layout, kis_parts, kiwoom_list_name, kiwoom_parts

PATH = "/uapi/x/v1/trading/y"
BALANCE = TrSpec(Provider.KIS, "TTTC8434R", "b", "GET", PATH, "query", True, mock_tr_id="VTTC8434R")
QUOTE = TrSpec(Provider.KIS, "FHKST01010100", "q", "GET", PATH, "query", True, mock_tr_id="FHKST01010100")
REAL_ONLY = TrSpec(
    Provider.KIS, "TTTC0051U", "r", "POST", PATH, "body", False, mock_supported=False, mock="no"
)
ROUTES = build_kis_index([BALANCE, QUOTE, REAL_ONLY])[PATH]


@pytest.mark.parametrize(
    ("env", "tr_id", "spec", "code"),
    [
        ("real", "TTTC8434R", BALANCE, ""),
        ("real", "VTTC8434R", None, "OPSQ0002"),
        ("mock", "VTTC8434R", BALANCE, ""),
        ("mock", "TTTC8434R", None, "OPSQ0002/mock"),
        ("real", "FHKST01010100", QUOTE, ""),
        ("mock", "FHKST01010100", QUOTE, ""),
        ("real", "TTTC0051U", REAL_ONLY, ""),
        ("mock", "TTTC0051U", None, "MCA00124"),
        ("mock", "VTTC0051U", None, "OPSQ0002"),
        ("real", "", None, "OPSQ0002"),
    ],
)
def test_resolve_kis(env: str, tr_id: str, spec: TrSpec | None, code: str) -> None:
    """A KIS server serves its own environment's id and refuses the other's the way the broker words it."""
    found = resolve_kis(ROUTES, tr_id, env)
    assert (found.spec, found.code) == (spec, code)


KT00018 = lookup(Provider.KIWOOM, "kt00018")
PLANNED = TrSpec(Provider.KIWOOM, "usa10001", "p", "POST", "/api/us/stkinfo", "body", True, planned=True)
KIWOOM_INDEX = {"kt00018": KT00018, "usa10001": PLANNED}


@pytest.mark.parametrize(
    ("group", "api_id", "spec", "code", "detail"),
    [
        ("dostk/acnt", "kt00018", KT00018, "", ""),
        ("dostk/chart", "kt00018", None, "1504", ""),
        ("dostk/acnt", "", None, "1501", ""),
        ("dostk/acnt", "ka99999", None, "1505", ""),
        ("dostk/acnt", "au10001", None, "1504", ""),
        ("us/stkinfo", "usa10001", None, "1505", f"{NOT_LIVE}: usa10001"),
        ("dostk/acnt", "usa10001", None, "1505", f"{NOT_LIVE}: usa10001"),
    ],
)
def test_resolve_kiwoom(group: str, api_id: str, spec: TrSpec | None, code: str, detail: str) -> None:
    """Kiwoom routes an api-id within its path group, 1501/1504/1505 otherwise, planned ids not live."""
    found = resolve_kiwoom(KIWOOM_INDEX, group, api_id)
    assert (found.spec, found.code, found.detail) == (spec, code, detail)


SAMSUNG = Basis(1, Style.KIS, date(2026, 11, 27), "81055689", "005930", "삼성전자", 70_000, {"trde_tp": "3"})
DIGITS = re.compile(r"\d+")
RATE = re.compile(r"-?\d+\.\d\d")


def _on_tick(text: str) -> bool:
    price = int(text)
    return price % tick_size(price) == 0 and 0.9 * 70_000 <= price <= 1.1 * 70_000


@pytest.mark.parametrize(
    ("field", "row", "check"),
    [
        ("stck_prpr", 0, _on_tick),
        ("stck_oprc", 3, _on_tick),
        ("prdy_vrss_sign", 0, lambda v: v in ("1", "2", "3", "4", "5")),
        ("stck_bsop_date", 0, lambda v: v == "20261127"),
        ("stck_bsop_date", 1, lambda v: v == "20261126"),
        ("stck_bsop_date", 5, lambda v: v == "20261120"),
        ("stck_cntg_hour", 2, lambda v: len(v) == 6 and "090000" <= v <= "153000"),
        ("hts_kor_isnm", 0, lambda v: v == "삼성전자"),
        ("cano", 0, lambda v: v == "81055689"),
        ("odno", 0, lambda v: len(v) == 10 and v.isdigit()),
        ("stck_shrn_iscd", 4, lambda v: v == "005930"),
        ("prdy_ctrt", 0, RATE.fullmatch),
        ("acml_vol", 0, DIGITS.fullmatch),
        ("acml_tr_pbmn", 0, DIGITS.fullmatch),
        ("TRDE_TP", 0, lambda v: v == "3"),
        ("sll_buy_dvsn_cd", 0, lambda v: len(v) == 2 and v.isdigit()),
        ("data_rank", 6, lambda v: v == "7"),
        ("stck_mxpr", 0, lambda v: int(v) == price_limits(70_000)[0]),
        ("stck_sdpr", 0, lambda v: v == "70000"),
        ("ovrs_cblc_yn", 0, lambda v: v in ("Y", "N")),
        ("inds_nm", 0, lambda v: not v.isascii()),
    ],
)
def test_value_by_field_name(field: str, row: int, check: object) -> None:
    """A field's name decides the kind of its value (price on ticks, dates back by weekday, codes, ...)."""
    assert callable(check)
    assert check(value(field, SAMSUNG, row)), value(field, SAMSUNG, row)


def test_value_is_stable_and_row_consistent() -> None:
    """The same basis gives the same values; a row's high is at least its low and its close between them."""
    for row in range(30):
        high, low = int(value("stck_hgpr", SAMSUNG, row)), int(value("stck_lwpr", SAMSUNG, row))
        close = int(value("stck_prpr", SAMSUNG, row))
        assert low <= close <= high
        assert value("prdy_ctrt", SAMSUNG, row) == value("prdy_ctrt", SAMSUNG, row)


@pytest.mark.parametrize(
    ("style", "field", "pattern"),
    [
        (Style.KIS_OVERSEAS, "last", r"\d+\.\d{4}"),
        (Style.KIWOOM, "cur_prc", r"[+-]?\d+"),
        (Style.KIWOOM, "flu_rt", r"[+-]?\d+\.\d\d"),
        (Style.KIS, "prdy_vrss", r"-?\d+"),
    ],
)
def test_value_style(style: Style, field: str, pattern: str) -> None:
    """Overseas prices carry four decimals, Kiwoom prices and rates a sign, KIS differences only a minus."""
    basis = Basis(9, style, date(2026, 11, 27), "12345678")
    for row in range(10):
        assert re.fullmatch(pattern, value(field, basis, row)), value(field, basis, row)


@pytest.mark.parametrize(
    ("day", "rows", "expected"),
    [
        (date(2026, 11, 27), 0, date(2026, 11, 27)),
        (date(2026, 11, 27), 4, date(2026, 11, 23)),
        (date(2026, 11, 27), 5, date(2026, 11, 20)),
        (date(2026, 11, 29), 0, date(2026, 11, 27)),
    ],
)
def test_weekday_back(day: date, rows: int, expected: date) -> None:
    """Rows go back one weekday each, from the day itself moved off a weekend."""
    assert weekday_back(day, rows) == expected


@pytest.mark.parametrize(
    ("key", "width"),
    [("CTX_AREA_NK200", 200), ("CTX_AREA_FK100", 100), ("CTX_AREA_NK30", 30), ("CTX_AREA_FK", 100)],
)
def test_ctx_width(key: str, width: int) -> None:
    """A context key's width is its published number, 100 when it has none."""
    assert ctx_width(key) == width


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("주식 매수주문", "buy"),
        ("주식 매도주문", "sell"),
        ("주식 정정주문", "modify"),
        ("주식 취소주문", "cancel"),
        ("주식주문(정정취소)", "modify"),
        ("금현물 주문", "order"),
    ],
)
def test_order_side(name: str, side: str) -> None:
    """The ledger records a generic order's side from its Korean name."""
    assert order_side(name) == side


@pytest.mark.parametrize(
    ("api_id", "name"),
    [
        ("ka10030", "stk_tdy_trde_qty_upper"),
        ("kt00018", "stk_bal_dtl"),
        ("ka20006", "inds_dt_pole"),
        ("ka10027", "stk_pred_flu_rt_upper"),
        ("ka40006", "etf_tm_trnsn"),
    ],
)
def test_kiwoom_list_name(api_id: str, name: str) -> None:
    """A Kiwoom list is named from the words of the api's Korean name, Kiwoom-style."""
    assert kiwoom_list_name(lookup(Provider.KIWOOM, api_id)) == name


@pytest.mark.parametrize(
    ("provider", "key", "parts"),
    [
        ("KIS", "TTTC0013U", [("output", Layout.OBJECT)]),
        ("KIS", "TTTC8908R", [("output", Layout.OBJECT)]),
        ("KIS", "CTSC9215R", [("output1", Layout.ROWS), ("output2", Layout.SUMMARY)]),
        ("KIS", "FHKUP03500100", [("output1", Layout.OBJECT), ("output2", Layout.ROWS)]),
        ("KIS", "FHPST01700000", [("output", Layout.ROWS)]),
        ("KIWOOM", "ka10001", [("", Layout.OBJECT)]),
        ("KIWOOM", "kt10002", [("", Layout.OBJECT)]),
        ("KIWOOM", "ka10030", [("", Layout.OBJECT), ("stk_tdy_trde_qty_upper", Layout.ROWS)]),
    ],
)
def test_answer_parts(provider: str, key: str, parts: list[tuple[str, Layout]]) -> None:
    """Orders and orderable queries are objects, account reads rows plus a summary, charts two parts."""
    spec = lookup(provider, key)
    built = kis_parts(spec) if provider == "KIS" else kiwoom_parts(spec)
    assert [(p.key, p.layout) for p in built] == parts
