"""``hubclient.market``: broker bodies (hand-written snippets) normalized into ``Candle`` and ``Tick``."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from hubclient import HubError, MalformedPayload
from hubclient.market import (
    KST,
    Candle,
    Tick,
    kis_daily_candles,
    kis_minute_candles,
    kis_trades,
    kiwoom_daily_candles,
    kiwoom_minute_candles,
    kiwoom_ticks,
)
from hubclient.models import Provider

KIS_MINUTE = {
    "rt_cd": "0",
    "output1": {"stck_prpr": "70100"},
    "output2": [
        {
            "stck_bsop_date": "20261123",
            "stck_cntg_hour": "101600",
            "stck_prpr": "70100",
            "stck_oprc": "70000",
            "stck_hgpr": "70200",
            "stck_lwpr": "69900",
            "cntg_vol": "1234",
            "acml_tr_pbmn": "86500000000",
        },
        {
            "stck_bsop_date": "20261123",
            "stck_cntg_hour": "101500",
            "stck_prpr": "70000",
            "stck_oprc": "69800",
            "stck_hgpr": "70000",
            "stck_lwpr": "69800",
            "cntg_vol": "0",
            "acml_tr_pbmn": "86400000000",
        },
    ],
}
KIWOOM_MINUTE = {
    "stk_cd": "005930",
    "stk_min_pole_chart_qry": [
        {
            "cur_prc": "+70100",
            "trde_qty": "1234",
            "cntr_tm": "20261123101600",
            "open_pric": "70000",
            "high_pric": "+70200",
            "low_pric": "-69900",
            "acc_trde_qty": "14947571",
            "pred_pre": "+100",
            "pred_pre_sig": "2",
        }
    ],
    "return_code": 0,
    "return_msg": "정상적으로 처리되었습니다",
}


def kiwoom_minute(**changes: Any) -> dict[str, Any]:
    """KIWOOM_MINUTE with its one row changed (a None value deletes the field)."""
    row = {**KIWOOM_MINUTE["stk_min_pole_chart_qry"][0], **changes}  # type: ignore[index]
    return {**KIWOOM_MINUTE, "stk_min_pole_chart_qry": [{k: v for k, v in row.items() if v is not None}]}


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A KST instant."""
    return datetime(year, month, day, hour, minute, second, tzinfo=KST)


def test_kis_minute_rows_become_candles_in_broker_order() -> None:
    """FHKST03010200 output2 rows become 1m candles labelled by their start minute (KST), newest first."""
    candles = kis_minute_candles(KIS_MINUTE, symbol="005930")
    assert candles == [
        Candle("005930", "1m", at(2026, 11, 23, 10, 16), 70000, 70200, 69900, 70100, 1234, Provider.KIS,
               "FHKST03010200"),
        Candle("005930", "1m", at(2026, 11, 23, 10, 15), 69800, 70000, 69800, 70000, 0, Provider.KIS,
               "FHKST03010200"),
    ]  # fmt: skip
    assert candles[0].start.utcoffset() == timedelta(hours=9)


def test_kis_past_minute_chart_keeps_its_tr_id_and_other_ids_are_refused() -> None:
    """FHKST03010230 rows read the same way and record their tr_id; a non-minute tr_id is a ValueError."""
    candles = kis_minute_candles(KIS_MINUTE, symbol="005930", tr_id="FHKST03010230")
    assert {c.tr_id for c in candles} == {"FHKST03010230"}
    with pytest.raises(ValueError, match="not a KIS minute chart"):
        kis_minute_candles(KIS_MINUTE, symbol="005930", tr_id="FHKST03010100")  # type: ignore[arg-type]


def test_kis_chart_without_rows_quirk_reads_as_no_candles() -> None:
    """KIS's ``output2: [{}]`` for a chart without rows normalizes to an empty list."""
    assert kis_minute_candles({"output1": {}, "output2": [{}]}, symbol="005930") == []
    assert kis_daily_candles({"output1": {}, "output2": [{}]}, symbol="005930") == []


def test_kis_daily_row_becomes_a_day_candle_at_midnight_kst() -> None:
    """A FHKST03010100 row becomes a 1d candle starting at 00:00 KST of stck_bsop_date, close = stck_clpr."""
    body = {
        "output2": [
            {
                "stck_bsop_date": "20261120",
                "stck_clpr": "70100",
                "stck_oprc": "69800",
                "stck_hgpr": "70500",
                "stck_lwpr": "69600",
                "acml_vol": "9263135",
                "acml_tr_pbmn": "648525000000",
                "prdy_vrss": "600",
            }
        ]
    }
    assert kis_daily_candles(body, symbol="005930") == [
        Candle("005930", "1d", at(2026, 11, 20), 69800, 70500, 69600, 70100, 9263135, Provider.KIS,
               "FHKST03010100")
    ]  # fmt: skip


def test_kis_trades_take_their_day_from_the_caller() -> None:
    """FHKST01010300 rows (HHMMSS only) become ticks on the given trading day."""
    body = {
        "output": [
            {"stck_cntg_hour": "102959", "stck_prpr": "70100", "cntg_vol": "15", "prdy_vrss": "100"},
            {"stck_cntg_hour": "102958", "stck_prpr": "70000", "cntg_vol": "3", "prdy_vrss": "0"},
        ]
    }
    assert kis_trades(body, symbol="005930", day=date(2026, 11, 27)) == [
        Tick("005930", at(2026, 11, 27, 10, 29, 59), 70100, 15, Provider.KIS, "FHKST01010300"),
        Tick("005930", at(2026, 11, 27, 10, 29, 58), 70000, 3, Provider.KIS, "FHKST01010300"),
    ]


def test_kiwoom_minute_signs_are_dropped() -> None:
    """ka10080 prices lose their direction sign ('+70100', '-69900'); symbol comes from stk_cd."""
    assert kiwoom_minute_candles(KIWOOM_MINUTE) == [
        Candle("005930", "1m", at(2026, 11, 23, 10, 16), 70000, 70200, 69900, 70100, 1234, Provider.KIWOOM,
               "ka10080")
    ]  # fmt: skip


def test_kis_and_kiwoom_snippets_of_one_minute_give_the_same_bar() -> None:
    """The same minute written by KIS (unsigned) and Kiwoom (signed) normalizes to equal OHLCV and start."""
    (kis,) = kis_minute_candles({"output2": KIS_MINUTE["output2"][:1]}, symbol="005930")  # type: ignore[index]
    (kw,) = kiwoom_minute_candles(KIWOOM_MINUTE)
    assert dataclasses.replace(kw, provider=Provider.KIS, tr_id="FHKST03010200") == kis


def test_kiwoom_daily_row_becomes_a_day_candle() -> None:
    """A ka10081 row becomes a 1d candle at 00:00 KST of dt; an explicit symbol overrides stk_cd."""
    body = {
        "stk_cd": "005930",
        "stk_dt_pole_chart_qry": [
            {
                "cur_prc": "70100",
                "trde_qty": "9263135",
                "trde_prica": "648525",
                "dt": "20261120",
                "open_pric": "69800",
                "high_pric": "70500",
                "low_pric": "69600",
                "pred_pre": "+600",
                "pred_pre_sig": "2",
                "trde_tern_rt": "+0.16",
            }
        ],
    }
    assert kiwoom_daily_candles(body, symbol="005930_NX") == [
        Candle("005930_NX", "1d", at(2026, 11, 20), 69800, 70500, 69600, 70100, 9263135, Provider.KIWOOM,
               "ka10081")
    ]  # fmt: skip


def test_kiwoom_tick_rows_become_ticks() -> None:
    """ka10079 rows become ticks at cntr_tm (KST, to the second) with cur_prc unsigned."""
    body = {
        "stk_cd": "005930",
        "last_tic_cnt": "",
        "stk_tic_chart_qry": [
            {"cur_prc": "-78900", "trde_qty": "143", "cntr_tm": "20250917131939", "open_pric": "78900"},
        ],
    }
    assert kiwoom_ticks(body) == [Tick("005930", at(2025, 9, 17, 13, 19, 39), 78900, 143, Provider.KIWOOM,
                                       "ka10079")]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (kiwoom_minute(cur_prc="70,100"), "cur_prc", "not an unsigned integer"),
        (kiwoom_minute(cur_prc="+-70100"), "cur_prc", "not an unsigned integer"),
        (kiwoom_minute(high_pric=""), "high_pric", "not an unsigned integer"),
        (kiwoom_minute(trde_qty="-5"), "trde_qty", "not an unsigned integer"),
        (kiwoom_minute(trde_qty="9" * 5000), "trde_qty", "18 digits at most"),  # int() refused: a ValueError
        (kiwoom_minute(cur_prc="1" * 25), "cur_prc", "18 digits at most"),  # past 64 bits: unwritable
        (kiwoom_minute(low_pric=None), "low_pric", "missing"),
        (kiwoom_minute(open_pric=70000.5), "open_pric", "float"),
        (kiwoom_minute(cntr_tm="20261123"), "cntr_tm", "time"),
        (kiwoom_minute(cntr_tm="20261323101600"), "cntr_tm", "time"),
        ({**KIWOOM_MINUTE, "stk_min_pole_chart_qry": None}, "stk_min_pole_chart_qry", "not a list"),
        ({**KIWOOM_MINUTE, "stk_min_pole_chart_qry": ["x"]}, "stk_min_pole_chart_qry", "not an object"),
        ({"stk_min_pole_chart_qry": []}, "stk_cd", "missing"),
        ([], "stk_min_pole_chart_qry", "not an object"),
    ],
)
def test_unreadable_kiwoom_rows_raise_malformed_payload_naming_the_field(
    body: Any, field: str, problem: str
) -> None:
    """A row that cannot be read raises MalformedPayload (a HubError and a ValueError) naming its field."""
    with pytest.raises(MalformedPayload, match=problem) as info:
        kiwoom_minute_candles(body)
    assert info.value.field == field and info.value.tr_id == "ka10080"
    assert isinstance(info.value, ValueError) and isinstance(info.value, HubError)
    assert field in str(info.value)


def test_unreadable_kis_rows_name_row_and_field() -> None:
    """A signed KIS price or a bad hour is malformed, reported with its row index and field."""
    signed = {"output2": [KIS_MINUTE["output2"][0], {**KIS_MINUTE["output2"][1], "stck_lwpr": "-69800"}]}  # type: ignore[index]
    with pytest.raises(MalformedPayload) as info:
        kis_minute_candles(signed, symbol="005930")
    assert (info.value.field, info.value.row) == ("stck_lwpr", 1)
    with pytest.raises(MalformedPayload, match="stck_cntg_hour"):
        kis_trades({"output": [{"stck_cntg_hour": "256100", "stck_prpr": "1", "cntg_vol": "1"}]},
                   symbol="005930", day=date(2026, 11, 27))  # fmt: skip
    with pytest.raises(MalformedPayload, match="output2"):
        kis_daily_candles({"output1": {}}, symbol="005930")


def test_values_are_frozen_and_time_aware() -> None:
    """Candles and ticks cannot be changed and refuse a naive time."""
    (candle,) = kiwoom_minute_candles(KIWOOM_MINUTE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        candle.close = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="timezone-aware"):
        dataclasses.replace(candle, start=datetime(2026, 11, 23, 10, 16))
    with pytest.raises(ValueError, match="timezone-aware"):
        Tick("005930", datetime(2026, 11, 23, 10, 16), 1, 1, Provider.KIS, "FHKST01010300")
