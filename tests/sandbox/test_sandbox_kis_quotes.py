"""KIS quotation TRs: envelope, headers, row counts, ordering, cursors and per-TR quirks."""

from __future__ import annotations

from typing import Any

from tests.sandbox.sandbox_kit import QUOTES, Sandbox, SandboxFactory


def _all_strings(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_strings(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_strings(v) for v in value)
    return isinstance(value, str)


async def test_inquire_price_envelope_and_headers(sandbox: Sandbox) -> None:
    """FHKST01010100: rt_cd "0", MCA00000, msg1 padded to 80 bytes, string values, tr_id/tr_cont/gt_uid."""
    token = await sandbox.kis_token()
    resp = await sandbox.kis_price(token)
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    assert resp.headers["tr_id"] == "FHKST01010100"
    assert resp.headers["tr_cont"] == "D"
    assert len(resp.headers["gt_uid"]) == 32
    body = await resp.json()
    assert (body["rt_cd"], body["msg_cd"]) == ("0", "MCA00000")
    assert body["msg1"].startswith("정상처리 되었습니다.") and body["msg1"].endswith(" ")
    assert len(body["msg1"].encode("euc-kr")) == 80
    out = body["output"]
    assert isinstance(out, dict) and _all_strings(out)
    assert out["stck_shrn_iscd"] == "005930" and int(out["stck_prpr"]) > 0
    assert int(out["stck_lwpr"]) <= int(out["stck_prpr"]) <= int(out["stck_hgpr"])
    assert int(out["prdy_vrss"]) == int(out["stck_prpr"]) - int(out["stck_sdpr"])


async def test_query_names_case_insensitive(sandbox: Sandbox) -> None:
    """Lower-case fid_* query names are answered exactly like upper-case ones."""
    token = await sandbox.kis_token()
    upper = await (await sandbox.kis_price(token)).json()
    lower = await sandbox.kis_get(
        f"{QUOTES}/inquire-price",
        "FHKST01010100",
        {"fid_cond_mrkt_div_code": "J", "fid_input_iscd": "005930"},
        token,
    )
    assert (await lower.json())["output"] == upper["output"]


async def test_missing_param_and_unknown_tr(sandbox: Sandbox) -> None:
    """A missing FID param is rt_cd "2" OPSQ2001; an unknown tr_id on a known path is HTTP 500 OPSQ0002."""
    token = await sandbox.kis_token()
    resp = await sandbox.kis_get(
        f"{QUOTES}/inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J"}, token
    )
    body = await resp.json()
    assert resp.status == 200 and (body["rt_cd"], body["msg_cd"]) == ("2", "OPSQ2001")
    assert "FID_INPUT_ISCD" in body["msg1"]
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    resp = await sandbox.kis_get(f"{QUOTES}/inquire-price", "FHKST99999999", params, token)
    assert resp.status == 500 and (await resp.json())["msg_cd"] == "OPSQ0002"


async def test_unknown_symbol_reads_as_zero(sandbox: Sandbox) -> None:
    """An unknown code answers rt_cd "0" with stck_prpr "0" (how clients detect 'not found')."""
    token = await sandbox.kis_token()
    body = await (await sandbox.kis_price(token, code="999999")).json()
    assert body["rt_cd"] == "0" and body["output"]["stck_prpr"] == "0"


async def test_inquire_ccnl_latest_30_ticks(sandbox: Sandbox) -> None:
    """FHKST01010300: the latest 30 trades, newest first, none after the simulated now."""
    token = await sandbox.kis_token()
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    body = await (await sandbox.kis_get(f"{QUOTES}/inquire-ccnl", "FHKST01010300", params, token)).json()
    rows = body["output"]
    assert len(rows) == 30 and _all_strings(rows)
    hours = [r["stck_cntg_hour"] for r in rows]
    assert hours == sorted(hours, reverse=True)
    assert hours[0] <= "103000"
    ticks = sandbox.state.market.ticks("005930", sandbox.state.clock.today(), sandbox.state.clock.now())
    assert [int(r["stck_prpr"]) for r in rows] == [t.price for t in ticks[-30:][::-1]]


async def _daily_price(
    sandbox: Sandbox, token: str, code: str, period: str, adj: str
) -> list[dict[str, str]]:
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": code,
        "FID_PERIOD_DIV_CODE": period,
        "FID_ORG_ADJ_PRC": adj,
    }
    body = await (
        await sandbox.kis_get(f"{QUOTES}/inquire-daily-price", "FHKST01010400", params, token)
    ).json()
    rows: list[dict[str, str]] = body["output"]
    return rows


async def test_inquire_daily_price_30_rows(sandbox: Sandbox) -> None:
    """FHKST01010400: 30 rows newest first for D, W and M; the newest daily row is today."""
    token = await sandbox.kis_token()
    for period in ("D", "W", "M"):
        rows = await _daily_price(sandbox, token, "000660", period, "1")
        assert len(rows) == 30, period
        dates = [r["stck_bsop_date"] for r in rows]
        assert dates == sorted(dates, reverse=True) and len(set(dates)) == 30
    daily = await _daily_price(sandbox, token, "000660", "D", "1")
    assert daily[0]["stck_bsop_date"] == "20261127"


async def test_adjusted_price_flags_are_per_tr(make_sandbox: SandboxFactory) -> None:
    """Across the simulated 5:1 split of 035720, FHKST01010400 adjusts on "1" but FHKST03010100 on "0"."""
    sandbox = await make_sandbox(clock_start="2025-06-10T15:40:00+09:00")
    token = await sandbox.kis_token()
    raw = await _daily_price(sandbox, token, "035720", "D", "0")
    adjusted = await _daily_price(sandbox, token, "035720", "D", "1")
    by_day_raw = {r["stck_bsop_date"]: int(r["stck_clpr"]) for r in raw}
    by_day_adj = {r["stck_bsop_date"]: int(r["stck_clpr"]) for r in adjusted}
    assert by_day_raw["20250530"] > 4 * by_day_adj["20250530"]  # before the split: raw is ~5x
    assert by_day_raw["20250603"] == by_day_adj["20250603"]  # after it: identical
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "035720",
        "FID_INPUT_DATE_1": "20250501",
        "FID_INPUT_DATE_2": "20250610",
        "FID_PERIOD_DIV_CODE": "D",
    }
    chart_adj = await (
        await sandbox.kis_get(
            f"{QUOTES}/inquire-daily-itemchartprice",
            "FHKST03010100",
            {**params, "FID_ORG_ADJ_PRC": "0"},
            token,
        )
    ).json()
    chart_raw = await (
        await sandbox.kis_get(
            f"{QUOTES}/inquire-daily-itemchartprice",
            "FHKST03010100",
            {**params, "FID_ORG_ADJ_PRC": "1"},
            token,
        )
    ).json()
    adj_rows = {r["stck_bsop_date"]: r for r in chart_adj["output2"]}
    raw_rows = {r["stck_bsop_date"]: r for r in chart_raw["output2"]}
    assert int(adj_rows["20250530"]["stck_clpr"]) == by_day_adj["20250530"]
    assert int(raw_rows["20250530"]["stck_clpr"]) == by_day_raw["20250530"]
    assert adj_rows["20250530"]["mod_yn"] == "Y" and raw_rows["20250530"]["mod_yn"] == "N"


async def test_daily_itemchartprice_range_and_limit(sandbox: Sandbox) -> None:
    """FHKST03010100: at most 100 rows, newest first, inside [DATE_1, DATE_2]; output1 is the quote."""
    token = await sandbox.kis_token()
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_DATE_1": "20250101",
        "FID_INPUT_DATE_2": "20261231",
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "0",
    }
    resp = await sandbox.kis_get(f"{QUOTES}/inquire-daily-itemchartprice", "FHKST03010100", params, token)
    body = await resp.json()
    rows = body["output2"]
    assert len(rows) == 100 and _all_strings(body)
    dates = [r["stck_bsop_date"] for r in rows]
    assert dates == sorted(dates, reverse=True) and dates[0] == "20261127"
    assert body["output1"]["stck_shrn_iscd"] == "005930" and body["output1"]["hts_kor_isnm"] == "삼성전자"
    monthly = await (
        await sandbox.kis_get(
            f"{QUOTES}/inquire-daily-itemchartprice",
            "FHKST03010100",
            {**params, "FID_PERIOD_DIV_CODE": "M"},
            token,
        )
    ).json()
    assert len(monthly["output2"]) == 23 and monthly["output2"][-1]["stck_bsop_date"] == "20250101"


async def test_daily_itemchartprice_empty_is_list_with_empty_object(sandbox: Sandbox) -> None:
    """A range without trading days answers output2 [{}] (the quirk clients strip)."""
    token = await sandbox.kis_token()
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_DATE_1": "20261128",
        "FID_INPUT_DATE_2": "20261129",
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "0",
    }
    body = await (
        await sandbox.kis_get(f"{QUOTES}/inquire-daily-itemchartprice", "FHKST03010100", params, token)
    ).json()
    assert body["rt_cd"] == "0" and body["output2"] == [{}]


async def test_minute_chart_30_rows_ending_at_hour(sandbox: Sandbox) -> None:
    """FHKST03010200: 30 one-minute bars newest first, the first at FID_INPUT_HOUR_1's minute."""
    token = await sandbox.kis_token()
    body = await (await sandbox.kis_minutes(token, "100000")).json()
    rows = body["output2"]
    assert len(rows) == 30 and _all_strings(body)
    assert rows[0]["stck_cntg_hour"] == "100000" and rows[-1]["stck_cntg_hour"] == "093100"
    assert all(r["stck_bsop_date"] == "20261127" for r in rows)
    assert set(body["output1"]) >= {"stck_prpr", "prdy_vrss", "acml_vol", "hts_kor_isnm"}


async def test_minute_chart_future_hour_clamps_to_now(sandbox: Sandbox) -> None:
    """An hour after the simulated now (10:30:00) returns bars up to now, never future bars."""
    token = await sandbox.kis_token()
    future = await (await sandbox.kis_minutes(token, "143000")).json()
    now = await (await sandbox.kis_minutes(token, "103000")).json()
    assert future["output2"] == now["output2"]
    assert future["output2"][0]["stck_cntg_hour"] <= "103000"


async def test_minute_chart_today_only(sandbox: Sandbox) -> None:
    """On a Saturday there is no today session: output2 is [{}] whatever the hour."""
    await sandbox.set_clock(now="2026-11-28T11:00:00+09:00")
    token = await sandbox.kis_token()
    body = await (await sandbox.kis_minutes(token, "153000")).json()
    assert body["rt_cd"] == "0" and body["output2"] == [{}]


async def test_page_whole_day_with_time_cursor(sandbox: Sandbox) -> None:
    """Paging FHKST03010200 by cursor = oldest bar - 1 minute yields 09:00..15:30, each bar once."""
    await sandbox.set_clock(now="2026-11-27T16:00:00+09:00")
    token = await sandbox.kis_token()
    cursor, calls = "153000", 0
    seen: list[str] = []
    while True:
        body = await (await sandbox.kis_minutes(token, cursor)).json()
        calls += 1
        rows = [r for r in body["output2"] if r]
        if not rows:
            break
        seen.extend(r["stck_cntg_hour"] for r in rows)
        hh, mm = int(rows[-1]["stck_cntg_hour"][:2]), int(rows[-1]["stck_cntg_hour"][2:4])
        minute = hh * 60 + mm - 1
        if minute < 9 * 60:
            break
        cursor = f"{minute // 60:02d}{minute % 60:02d}00"
        await sandbox.set_clock(advance_s=1)  # stay under the limit without sleeping
    assert len(seen) == 391 == len(set(seen))
    assert seen[0] == "153000" and seen[-1] == "090000"
    assert calls == 14
    day_bars = sandbox.state.market.minute_bars("005930", sandbox.state.clock.today())
    daily = sandbox.state.market.daily_bar("005930", day_bars[0].day)
    assert daily is not None and sum(b.volume for b in day_bars) == daily.volume


async def test_daily_minute_chart_is_real_only(sandbox: Sandbox) -> None:
    """FHKST03010230 returns 120 bars on real (past days included with Y) and MCA00124 on mock."""
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_DATE_1": "20261126",
        "FID_INPUT_HOUR_1": "100000",
        "FID_PW_DATA_INCU_YN": "Y",
        "FID_FAKE_TICK_INCU_YN": "",
    }
    token = await sandbox.kis_token()
    path = f"{QUOTES}/inquire-time-dailychartprice"
    body = await (await sandbox.kis_get(path, "FHKST03010230", params, token)).json()
    rows = body["output2"]
    assert len(rows) == 120
    assert (rows[0]["stck_bsop_date"], rows[0]["stck_cntg_hour"]) == ("20261126", "100000")
    assert rows[-1]["stck_bsop_date"] == "20261125"  # 61 bars of 26th, then the 25th's close backwards
    mock_token = await sandbox.kis_token("mock", key="M" * 36)
    resp = await sandbox.kis_get(path, "FHKST03010230", params, mock_token, env="mock", key="M" * 36)
    assert resp.status == 500
    assert await resp.json() == {"rt_cd": "1", "msg_cd": "MCA00124", "msg1": "해당 서비스를 찾을수 없습니다."}
