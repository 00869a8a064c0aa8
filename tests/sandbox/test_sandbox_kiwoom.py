"""Kiwoom REST: token, api-id routing, bracketed error codes, signed minute prices, cont-yn/next-key."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.sandbox.clock import KST
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox, SandboxFactory

MINUTES = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}


async def test_token_shape(sandbox: Sandbox) -> None:
    """au10001: expires_dt is KST wall time %Y%m%d%H%M%S 24 h ahead, token_type "bearer", field token."""
    resp = await sandbox.kiwoom_token_response()
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "bearer" and body["return_code"] == 0
    assert body["return_msg"] == "정상적으로 처리되었습니다" and len(body["token"]) > 40
    expires = datetime.strptime(body["expires_dt"], "%Y%m%d%H%M%S").replace(tzinfo=KST)
    assert expires == SESSION_NOW + timedelta(days=1)


async def test_token_interval_and_new_token(sandbox: Sandbox) -> None:
    """A re-issue within 60 s is 5 + [1700:... au10001]; after 60 s a new token, the old one still valid."""
    first = await sandbox.kiwoom_token()
    early = await sandbox.kiwoom_token_response()
    body = await early.json()
    assert early.status == 429 and body["return_code"] == 5 and "[1700:" in body["return_msg"]
    assert "API ID=au10001" in body["return_msg"]
    await sandbox.set_clock(advance_s=60)
    second = await sandbox.kiwoom_token()
    assert second != first
    for token in (first, second):
        assert (await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token)).status == 200
    stats = await sandbox.env_stats("kiwoom/real", "kw-app-1")
    assert (stats["tokens_issued"], stats["tokens_new"], stats["token_refusals"]) == (2, 2, 1)


async def test_token_errors(sandbox: Sandbox) -> None:
    """Missing grant_type is [8011], missing secretkey [8020], a wrong secret for a bound key [8001]."""
    missing_grant = await sandbox.client.post(
        "/kiwoom/real/oauth2/token", json={"appkey": "a", "secretkey": "b"}
    )
    assert "[8011:" in (await missing_grant.json())["return_msg"]
    no_secret = await sandbox.client.post(
        "/kiwoom/real/oauth2/token", json={"grant_type": "client_credentials", "appkey": "a"}
    )
    assert "[8020:" in (await no_secret.json())["return_msg"]
    await sandbox.kiwoom_token()
    await sandbox.set_clock(advance_s=60)
    wrong = await (await sandbox.kiwoom_token_response(secret="other")).json()
    assert wrong["return_code"] == 3 and "[8001:" in wrong["return_msg"]


async def test_api_id_routing_errors(sandbox: Sandbox) -> None:
    """No api-id is 1501, an unknown one 1505, one of another path group 1504, all return_code 2."""
    token = await sandbox.kiwoom_token()
    cases = {None: 1501, "ka99999": 1505, "kt10000": 1504}
    for api_id, code in cases.items():
        resp = await sandbox.kiwoom_post("chart", api_id, MINUTES, token)
        body = await resp.json()
        assert resp.status == 200 and body["return_code"] == 2, api_id
        assert f"[{code}:" in body["return_msg"], body


async def test_bad_token_is_8005(sandbox: Sandbox) -> None:
    """A garbage bearer token is HTTP 200, return_code 3 and [8005:...] inside return_msg."""
    await sandbox.kiwoom_token()
    resp = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, "garbage")
    assert resp.status == 200
    assert await resp.json() == {
        "return_code": 3,
        "return_msg": "인증에 실패했습니다[8005:Token이 유효하지 않습니다]",
    }


async def test_wrong_environment(sandbox: Sandbox) -> None:
    """A mock token on real is [8031]; a key bound to mock asking real for a token is [8030]."""
    mock_token = await sandbox.kiwoom_token("mock")
    resp = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, mock_token, env="real")
    assert "[8031:" in (await resp.json())["return_msg"]
    resp = await sandbox.kiwoom_token_response("real")
    body = await resp.json()
    assert body["return_code"] == 3 and "[8030:" in body["return_msg"]


async def test_minute_bars_signed_and_newest_first(sandbox: Sandbox) -> None:
    """ka10080 rows are newest first and prices carry the sign of their direction against the reference."""
    token = await sandbox.kiwoom_token()
    resp = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token)
    body = await resp.json()
    assert resp.headers["api-id"] == "ka10080"
    rows = body["stk_min_pole_chart_qry"]
    assert body["stk_cd"] == "005930" and len(rows) == 900
    times = [r["cntr_tm"] for r in rows]
    assert times == sorted(times, reverse=True) and times[0] == "20261127102900"
    ref = sandbox.state.market.prev_close("005930", SESSION_NOW.date())
    today = [r for r in rows if r["cntr_tm"].startswith("20261127")]
    for row in today:
        for name in ("cur_prc", "open_pric", "high_pric", "low_pric"):
            value = int(row[name])
            assert abs(value) != ref or row[name][0] not in "+-"
            assert (value > 0 and row[name].startswith("+")) == (abs(value) > ref)
            assert (row[name].startswith("-")) == (abs(value) < ref)
        assert int(row["pred_pre"]) == abs(int(row["cur_prc"])) - ref
    assert any(r["cur_prc"][0] in "+-" for r in rows)


async def test_minute_bar_scopes(sandbox: Sandbox) -> None:
    """tic_scope 5 merges five one-minute bars aligned on 09:00; an unsupported scope is [1517]."""
    token = await sandbox.kiwoom_token()
    one = (await (await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token)).json())[
        "stk_min_pole_chart_qry"
    ]
    five = (
        await (await sandbox.kiwoom_post("chart", "ka10080", {**MINUTES, "tic_scope": "5"}, token)).json()
    )["stk_min_pole_chart_qry"]
    bucket = [r for r in one if "20261127100000" <= r["cntr_tm"] <= "20261127100400"]
    row = next(r for r in five if r["cntr_tm"] == "20261127100000")
    assert int(row["trde_qty"]) == sum(int(r["trde_qty"]) for r in bucket)
    assert abs(int(row["high_pric"])) == max(abs(int(r["high_pric"])) for r in bucket)
    assert abs(int(row["cur_prc"])) == abs(int(bucket[0]["cur_prc"]))
    bad = await sandbox.kiwoom_post("chart", "ka10080", {**MINUTES, "tic_scope": "2"}, token)
    assert "[1517:" in (await bad.json())["return_msg"]


async def test_page_whole_day_with_next_key(make_sandbox: SandboxFactory) -> None:
    """Paging ka10080 (100 rows a page) by cont-yn/next-key walks a whole day and then the day before."""
    sandbox = await make_sandbox(kiwoom_minute_rows_per_page=100, kiwoom_real_rate_per_s=1000)
    token = await sandbox.kiwoom_token()
    body = {**MINUTES, "base_dt": "20261126"}
    headers: dict[str, str] = {}
    seen: list[str] = []
    pages = 0
    while True:
        resp = await sandbox.kiwoom_post("chart", "ka10080", body, token, headers=headers)
        data = await resp.json()
        pages += 1
        seen.extend(r["cntr_tm"] for r in data["stk_min_pole_chart_qry"])
        if resp.headers["cont-yn"] != "Y" or seen[-1] < "20261126":
            break
        assert resp.headers["next-key"]
        headers = {"cont-yn": "Y", "next-key": resp.headers["next-key"]}
    day = [t for t in seen if t.startswith("20261126")]
    assert len(day) == 391 == len(set(day))
    assert day[0] == "20261126153000" and day[-1] == "20261126090000"
    assert pages == 4 and seen[-1].startswith("20261125")
    assert seen == sorted(seen, reverse=True)


async def test_next_key_is_bound_to_the_request(sandbox: Sandbox) -> None:
    """A next-key replayed with another stock is [1517]; cont-yn Y without next-key is [1517]."""
    token = await sandbox.kiwoom_token()
    first = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token)
    key = first.headers["next-key"]
    assert first.headers["cont-yn"] == "Y" and key
    other = await sandbox.kiwoom_post(
        "chart", "ka10080", {**MINUTES, "stk_cd": "000660"}, token, headers={"cont-yn": "Y", "next-key": key}
    )
    assert "[1517:" in (await other.json())["return_msg"]
    missing = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token, headers={"cont-yn": "Y"})
    assert "[1517:" in (await missing.json())["return_msg"]


async def test_tick_chart(sandbox: Sandbox) -> None:
    """ka10079 with tic_scope 1 returns every trade of today newest first, then earlier days."""
    token = await sandbox.kiwoom_token()
    body = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}
    data = await (await sandbox.kiwoom_post("chart", "ka10079", body, token)).json()
    rows = data["stk_tic_chart_qry"]
    ticks = sandbox.state.market.ticks("005930", SESSION_NOW.date(), SESSION_NOW)
    today = [r for r in rows if r["cntr_tm"].startswith("20261127")]
    assert len(today) == min(len(ticks), 900)
    assert int(today[0]["cur_prc"]) == ticks[-1].price and int(today[0]["trde_qty"]) == ticks[-1].volume
    assert "last_tic_cnt" in data


async def test_daily_weekly_monthly(sandbox: Sandbox) -> None:
    """ka10081/82/83 rows are newest first with unsigned prices, signed pred_pre and their own list keys."""
    token = await sandbox.kiwoom_token()
    body = {"stk_cd": "005930", "base_dt": "20261127", "upd_stkpc_tp": "1"}
    daily = await (await sandbox.kiwoom_post("chart", "ka10081", body, token)).json()
    rows = daily["stk_dt_pole_chart_qry"]
    assert len(rows) == 600 and rows[0]["dt"] == "20261127"
    assert [r["dt"] for r in rows] == sorted((r["dt"] for r in rows), reverse=True)
    assert all(r["cur_prc"].isdigit() and r["open_pric"].isdigit() for r in rows)
    assert all(r["pred_pre"] == "0" or r["pred_pre"][0] in "+-" for r in rows)
    bar = sandbox.state.market.daily_bar("005930", SESSION_NOW.date().replace(day=26))
    assert bar is not None
    assert int(rows[1]["trde_prica"]) == bar.value // 1_000_000
    weekly = await (await sandbox.kiwoom_post("chart", "ka10082", body, token)).json()
    assert weekly["stk_stk_pole_chart_qry"][0]["dt"] == "20261123"
    monthly = await (await sandbox.kiwoom_post("chart", "ka10083", body, token)).json()
    assert monthly["stk_mth_pole_chart_qry"][0]["dt"] == "20261102"
    missing = await sandbox.kiwoom_post("chart", "ka10081", {"stk_cd": "005930", "upd_stkpc_tp": "1"}, token)
    assert "[1511:" in (await missing.json())["return_msg"]


async def test_daily_paging(make_sandbox: SandboxFactory) -> None:
    """ka10081 pages by next-key until the history start, without gaps or repeats."""
    sandbox = await make_sandbox(kiwoom_daily_rows_per_page=250, kiwoom_real_rate_per_s=1000)
    token = await sandbox.kiwoom_token()
    body = {"stk_cd": "000660", "base_dt": "20261127", "upd_stkpc_tp": "1"}
    headers: dict[str, str] = {}
    dates: list[str] = []
    while True:
        resp = await sandbox.kiwoom_post("chart", "ka10081", body, token, headers=headers)
        dates.extend(r["dt"] for r in (await resp.json())["stk_dt_pole_chart_qry"])
        if resp.headers["cont-yn"] != "Y":
            break
        headers = {"cont-yn": "Y", "next-key": resp.headers["next-key"]}
    expected = sandbox.state.market.trading_days(sandbox.state.market.history_start, SESSION_NOW.date())
    assert dates == [f"{d:%Y%m%d}" for d in reversed(expected)]


async def test_unknown_stock_and_missing_field(sandbox: Sandbox) -> None:
    """An unknown stock is [1902]; a missing tic_scope is [1511]."""
    token = await sandbox.kiwoom_token()
    unknown = await sandbox.kiwoom_post("chart", "ka10080", {**MINUTES, "stk_cd": "999999"}, token)
    assert "[1902:" in (await unknown.json())["return_msg"]
    missing = await sandbox.kiwoom_post("chart", "ka10080", {"stk_cd": "005930", "upd_stkpc_tp": "1"}, token)
    assert "[1511:" in (await missing.json())["return_msg"]


async def test_orders(sandbox: Sandbox) -> None:
    """kt10000 places a buy with an ord_no; a non-numeric ord_qty is [1517]; both land in the right place."""
    token = await sandbox.kiwoom_token()
    order = {
        "dmst_stex_tp": "KRX",
        "stk_cd": "005930",
        "ord_qty": "3",
        "ord_uv": "62000",
        "trde_tp": "0",
        "cond_uv": "",
    }
    resp = await sandbox.kiwoom_post("ordr", "kt10000", order, token)
    body = await resp.json()
    assert body["return_code"] == 0 and body["ord_no"] == "0000001" and body["dmst_stex_tp"] == "KRX"
    bad = await sandbox.kiwoom_post("ordr", "kt10001", {**order, "ord_qty": "three"}, token)
    assert "[1517:" in (await bad.json())["return_msg"]
    assert [(o.side, o.quantity) for o in sandbox.state.orders] == [("buy", 3)]


async def test_revoke(sandbox: Sandbox) -> None:
    """au10002 revokes a token, after which it is [8005]."""
    token = await sandbox.kiwoom_token()
    body = {"appkey": "kw-app-1", "secretkey": "kw-secret-1", "token": token}
    resp = await sandbox.client.post("/kiwoom/real/oauth2/revoke", json=body)
    assert (await resp.json())["return_code"] == 0
    after = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, token)
    assert "[8005:" in (await after.json())["return_msg"]
