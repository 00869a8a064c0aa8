"""The sandbox refuses malformed KIS quotation inputs as KIS does: HTTP 200, ``rt_cd "2"``, ``OPSQ2001`` and
the field's name, one parametrized case per input rule (the in-process sandbox on a test server)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.sandbox_kit import QUOTES, Sandbox

SYMBOL = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
DAILY = {"FID_PERIOD_DIV_CODE": "D", "FID_ORG_ADJ_PRC": "1"}
CHART = {"FID_INPUT_DATE_1": "20261101", "FID_INPUT_DATE_2": "20261127", **DAILY}
MINUTES = {"FID_ETC_CLS_CODE": "", "FID_INPUT_HOUR_1": "100000", "FID_PW_DATA_INCU_YN": "Y"}
PAST = {"FID_INPUT_DATE_1": "20261126", "FID_INPUT_HOUR_1": "100000", "FID_PW_DATA_INCU_YN": "N"}

ENDPOINTS = {
    "FHKST01010100": ("inquire-price", {}),
    "FHKST01010300": ("inquire-ccnl", {}),
    "FHKST01010400": ("inquire-daily-price", DAILY),
    "FHKST03010100": ("inquire-daily-itemchartprice", CHART),
    "FHKST03010200": ("inquire-time-itemchartprice", MINUTES),
    "FHKST03010230": ("inquire-time-dailychartprice", PAST),
}


async def quote(sandbox: Sandbox, tr_id: str, **changes: str | None) -> dict[str, Any]:
    """Call ``tr_id`` with valid parameters changed by ``changes`` (None removes one); the JSON body."""
    path, extra = ENDPOINTS[tr_id]
    params = {**SYMBOL, **extra, **changes}
    sent = {k: v for k, v in params.items() if v is not None}
    if not hasattr(sandbox, "token"):  # one token per test: KIS issues one a minute per key
        sandbox.token = await sandbox.kis_token()  # type: ignore[attr-defined]
    resp = await sandbox.kis_get(f"{QUOTES}/{path}", tr_id, sent, sandbox.token)  # type: ignore[attr-defined]
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.parametrize("tr_id", sorted(ENDPOINTS))
async def test_every_quotation_answers_with_valid_input(sandbox: Sandbox, tr_id: str) -> None:
    """The valid parameters of each case are accepted (so each refusal below is due to its one change)."""
    body = await quote(sandbox, tr_id)
    assert body["rt_cd"] == "0", body


@pytest.mark.parametrize(
    ("tr_id", "changes", "field"),
    [
        ("FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "X"}, "FID_COND_MRKT_DIV_CODE"),
        ("FHKST01010300", {"FID_INPUT_ISCD": None}, "FID_INPUT_ISCD"),
        ("FHKST01010400", {"FID_INPUT_ISCD": ""}, "FID_INPUT_ISCD"),
        ("FHKST01010400", {"FID_PERIOD_DIV_CODE": "Y"}, "FID_PERIOD_DIV_CODE"),
        ("FHKST01010400", {"FID_ORG_ADJ_PRC": "2"}, "FID_ORG_ADJ_PRC"),
        ("FHKST03010100", {"FID_COND_MRKT_DIV_CODE": None}, "FID_COND_MRKT_DIV_CODE"),
        ("FHKST03010100", {"FID_INPUT_DATE_1": "2026-11-01"}, "FID_INPUT_DATE_1"),
        ("FHKST03010100", {"FID_INPUT_DATE_2": "20261340"}, "FID_INPUT_DATE_2"),
        ("FHKST03010100", {"FID_PERIOD_DIV_CODE": "DW"}, "FID_PERIOD_DIV_CODE"),
        ("FHKST03010100", {"FID_ORG_ADJ_PRC": None}, "FID_ORG_ADJ_PRC"),
        ("FHKST03010200", {"FID_INPUT_ISCD": None}, "FID_INPUT_ISCD"),
        ("FHKST03010200", {"FID_INPUT_HOUR_1": "1000"}, "FID_INPUT_HOUR_1"),
        ("FHKST03010200", {"FID_INPUT_HOUR_1": "256000"}, "FID_INPUT_HOUR_1"),
        ("FHKST03010200", {"FID_PW_DATA_INCU_YN": "X"}, "FID_PW_DATA_INCU_YN"),
        ("FHKST03010230", {"FID_COND_MRKT_DIV_CODE": "Q"}, "FID_COND_MRKT_DIV_CODE"),
        ("FHKST03010230", {"FID_INPUT_DATE_1": None}, "FID_INPUT_DATE_1"),
        ("FHKST03010230", {"FID_INPUT_HOUR_1": "10000a"}, "FID_INPUT_HOUR_1"),
    ],
)
async def test_a_malformed_input_is_refused_naming_the_field(
    sandbox: Sandbox, tr_id: str, changes: dict[str, str | None], field: str
) -> None:
    """One bad or missing parameter: KIS's input error naming exactly that field."""
    body = await quote(sandbox, tr_id, **changes)
    assert (body["rt_cd"], body["msg_cd"]) == ("2", "OPSQ2001")
    assert body["msg1"].strip() == f"ERROR : INPUT_FIELD_NAME {field}"


async def test_minute_bars_of_past_days_continue_with_the_flag(sandbox: Sandbox) -> None:
    """FHKST03010230 with FID_PW_DATA_INCU_YN=Y fills 120 bars from the days before, newest first."""
    single = await quote(sandbox, "FHKST03010230", FID_INPUT_HOUR_1="091000")
    more = await quote(sandbox, "FHKST03010230", FID_INPUT_HOUR_1="091000", FID_PW_DATA_INCU_YN="Y")
    assert len(single["output2"]) == 11  # 09:00 through 09:10 of that day only
    rows = more["output2"]
    assert len(rows) == 120
    stamps = [(r["stck_bsop_date"], r["stck_cntg_hour"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    assert {r["stck_bsop_date"] for r in rows} == {"20261126", "20261125"}


async def test_a_future_minute_request_is_cut_at_the_clock(sandbox: Sandbox) -> None:
    """Asking for a later day or hour gives bars only up to the sandbox's now (10:30 today)."""
    body = await quote(sandbox, "FHKST03010230", FID_INPUT_DATE_1="20261130", FID_INPUT_HOUR_1="153000")
    newest = body["output2"][0]
    assert newest["stck_bsop_date"] == "20261127"
    assert "102900" <= newest["stck_cntg_hour"] <= "103000"  # the bar in progress at 10:30:00, no later
