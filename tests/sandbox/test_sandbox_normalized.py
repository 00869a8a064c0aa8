"""``hubclient.market`` normalizers on the in-process sandbox's raw broker bodies: KIS and Kiwoom agree.

The sandbox serves both brokers from one deterministic market (``SandboxState.market``, seeded by
``market_seed``), so the same minute, day or trade read from KIS and from Kiwoom must normalize to the same
``Candle``/``Tick`` apart from ``provider`` and ``tr_id``. The clock is frozen at SESSION_NOW (Friday
10:30 KST, mid-session); no Kafka or Redis is involved, the broker HTTP APIs are called directly.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any

import pytest

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
from tests.sandbox.sandbox_kit import QUOTES, SESSION_NOW, Sandbox, SandboxFactory

TODAY = SESSION_NOW.date()
THURSDAY = date(2026, 11, 26)


async def kis_body(sandbox: Sandbox, path: str, tr_id: str, params: dict[str, str]) -> dict[str, Any]:
    """The JSON body of one successful KIS quotation GET (a fresh token each call's sandbox)."""
    token = await sandbox.kis_token()
    resp = await sandbox.kis_get(f"{QUOTES}/{path}", tr_id, params, token)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200 and body["rt_cd"] == "0", body
    return body


async def kiwoom_body(sandbox: Sandbox, api_id: str, params: dict[str, str]) -> dict[str, Any]:
    """The JSON body of one successful Kiwoom chart POST (first page)."""
    token = await sandbox.kiwoom_token()
    resp = await sandbox.kiwoom_post("chart", api_id, params, token)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200 and body["return_code"] == 0, body
    return body


def as_kis(value: Candle | Tick, tr_id: str) -> Candle | Tick:
    """A Kiwoom value relabelled as if KIS had served it, to compare everything else."""
    return dataclasses.replace(value, provider=Provider.KIS, tr_id=tr_id)


async def kis_today_minutes(sandbox: Sandbox, symbol: str) -> list[Candle]:
    """FHKST03010200's first page (30 bars ending now), normalized."""
    params = {
        "FID_ETC_CLS_CODE": "",
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": symbol,
        "FID_INPUT_HOUR_1": "153000",
        "FID_PW_DATA_INCU_YN": "N",
    }
    body = await kis_body(sandbox, "inquire-time-itemchartprice", "FHKST03010200", params)
    return kis_minute_candles(body, symbol=symbol)


async def kiwoom_minutes(sandbox: Sandbox, symbol: str, day: date) -> tuple[list[Candle], dict[str, Any]]:
    """ka10080's first page of one-minute bars from ``day`` back, normalized, with the raw body."""
    body = await kiwoom_body(
        sandbox,
        "ka10080",
        {"stk_cd": symbol, "tic_scope": "1", "upd_stkpc_tp": "0", "base_dt": f"{day:%Y%m%d}"},
    )
    return kiwoom_minute_candles(body), body


@pytest.mark.parametrize("symbol", ["005930", "000660"])
async def test_todays_minutes_from_kis_and_kiwoom_are_the_same_candles(sandbox: Sandbox, symbol: str) -> None:
    """Today's latest 30 minutes from FHKST03010200 and ka10080 are equal candles, the market's own bars."""
    kis = await kis_today_minutes(sandbox, symbol)
    kiwoom, raw = await kiwoom_minutes(sandbox, symbol, TODAY)
    assert len(kis) == 30 and kis[-1].start < kis[0].start <= SESSION_NOW
    by_start = {c.start: c for c in kiwoom}
    assert [as_kis(by_start[c.start], "FHKST03010200") for c in kis] == kis
    assert {(c.provider, c.tr_id, c.timeframe, c.symbol) for c in kiwoom} == {
        (Provider.KIWOOM, "ka10080", "1m", symbol)
    }
    assert any(row["cur_prc"][0] in "+-" for row in raw["stk_min_pole_chart_qry"]), "signs were there to drop"
    bars = sandbox.state.market.minute_bars(symbol, TODAY, SESSION_NOW)[-30:][::-1]
    assert [(c.start, c.open, c.high, c.low, c.close, c.volume) for c in kis] == [
        (b.start, b.open, b.high, b.low, b.close, b.volume) for b in bars
    ], "both are the one shared market"


async def test_a_past_day_from_kis_time_dailychart_matches_kiwoom(sandbox: Sandbox) -> None:
    """Thursday's last 120 minutes from FHKST03010230 equal ka10080's candles for the same minutes."""
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_HOUR_1": "153000",
        "FID_INPUT_DATE_1": f"{THURSDAY:%Y%m%d}",
        "FID_PW_DATA_INCU_YN": "N",
        "FID_FAKE_TICK_INCU_YN": "",
    }
    body = await kis_body(sandbox, "inquire-time-dailychartprice", "FHKST03010230", params)
    kis = kis_minute_candles(body, symbol="005930", tr_id="FHKST03010230")
    kiwoom, _ = await kiwoom_minutes(sandbox, "005930", THURSDAY)
    assert len(kis) == 120 and kis[0].start == datetime(2026, 11, 26, 15, 30, tzinfo=KST)
    by_start = {c.start: c for c in kiwoom}
    assert [as_kis(by_start[c.start], "FHKST03010230") for c in kis] == kis


async def test_daily_candles_from_kis_and_kiwoom_agree(sandbox: Sandbox) -> None:
    """Unadjusted days from FHKST03010100 (D) and ka10081 are equal 1d candles, today's partial one too."""
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_DATE_1": "20261001",
        "FID_INPUT_DATE_2": f"{TODAY:%Y%m%d}",
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "1",
    }
    kis = kis_daily_candles(
        await kis_body(sandbox, "inquire-daily-itemchartprice", "FHKST03010100", params), symbol="005930"
    )
    body = await kiwoom_body(
        sandbox, "ka10081", {"stk_cd": "005930", "base_dt": f"{TODAY:%Y%m%d}", "upd_stkpc_tp": "0"}
    )
    kiwoom = kiwoom_daily_candles(body)
    assert len(kis) > 30 and kis[0].start == datetime(2026, 11, 27, tzinfo=KST)
    by_start = {c.start: c for c in kiwoom}
    assert [as_kis(by_start[c.start], "FHKST03010100") for c in kis] == kis


async def test_latest_trades_from_kis_and_kiwoom_ticks_agree(sandbox: Sandbox) -> None:
    """FHKST01010300's latest 30 trades equal the newest 30 single-trade rows of ka10079."""
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    kis = kis_trades(
        await kis_body(sandbox, "inquire-ccnl", "FHKST01010300", params), symbol="005930", day=TODAY
    )
    body = await kiwoom_body(sandbox, "ka10079", {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "0"})
    kiwoom = kiwoom_ticks(body)
    assert len(kis) == 30 and kis[0].time <= SESSION_NOW
    assert [as_kis(t, "FHKST01010300") for t in kiwoom[:30]] == kis


async def test_two_sandboxes_serve_identical_candles(make_sandbox: SandboxFactory) -> None:
    """Two separately started sandboxes (default market seed) normalize to the very same candles."""
    first, second = await make_sandbox(), await make_sandbox()
    assert await kis_today_minutes(first, "005930") == await kis_today_minutes(second, "005930")
    assert (await kiwoom_minutes(first, "005930", THURSDAY))[0] == (
        await kiwoom_minutes(second, "005930", THURSDAY)
    )[0]
