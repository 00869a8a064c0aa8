"""The deterministic market and the same data from both brokers."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from services.sandbox.bars import CLOSE_S, OPEN_S, aggregate, round_tick, tick_size
from services.sandbox.clock import KST
from services.sandbox.market import Market
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox

DAY = date(2026, 11, 26)


def test_deterministic_by_seed() -> None:
    """Two markets with one seed produce identical ticks; another seed differs."""
    a, b, c = Market(1, date(2024, 1, 2)), Market(1, date(2024, 1, 2)), Market(2, date(2024, 1, 2))
    assert a.ticks("005930", DAY) == b.ticks("005930", DAY)
    assert a.ticks("005930", DAY) != c.ticks("005930", DAY)
    # access order must not matter
    assert Market(1, date(2024, 1, 2)).daily_bar("005930", DAY) == a.daily_bar("005930", DAY)


def test_tick_stream_shape() -> None:
    """Ticks run 09:00:00 to 15:30:00 on valid KRX prices, every minute trades, a few thousand at most."""
    market = Market(7, date(2024, 1, 2))
    for code in ("005930", "207940", "041510"):
        ticks = market.ticks(code, DAY)
        assert 391 <= len(ticks) <= 3000
        assert ticks[0].second == OPEN_S and ticks[-1].second == CLOSE_S
        assert [t.second for t in ticks] == sorted(t.second for t in ticks)
        assert all(t.price % tick_size(t.price) == 0 and t.volume > 0 for t in ticks)
        assert {t.second // 60 for t in ticks} == set(range(540, 931))


def test_minute_bars_add_up_to_the_daily_bar() -> None:
    """Minute bars aggregate exactly to the day's open, high, low, close and volume."""
    market = Market(7, date(2024, 1, 2))
    bars = market.minute_bars("000660", DAY)
    daily = market.daily_bar("000660", DAY)
    assert daily is not None and len(bars) == 391
    assert (bars[0].open, max(b.high for b in bars), min(b.low for b in bars), bars[-1].close) == (
        daily.open,
        daily.high,
        daily.low,
        daily.close,
    )
    assert sum(b.volume for b in bars) == daily.volume == bars[-1].cum_volume
    assert abs(bars[-1].cum_value - daily.value) / daily.value < 0.01


def test_partial_day_and_calendar() -> None:
    """A day cut at 10:30:15 has bars up to 10:30; weekends and configured holidays have none."""
    market = Market(7, date(2024, 1, 2), holidays=[date(2026, 11, 25)])
    cut = datetime(2026, 11, 26, 10, 30, 15, tzinfo=KST)
    bars = market.minute_bars("005930", DAY, cut)
    assert bars[-1].minute <= 630 and all(t.second <= 37815 for t in market.ticks("005930", DAY, cut))
    assert market.minute_bars("005930", date(2026, 11, 28)) == []
    assert market.ticks("005930", date(2026, 11, 25)) == []
    assert market.previous_trading_day(DAY) == date(2026, 11, 24)
    assert market.daily_bar("005930", DAY, datetime(2026, 11, 26, 8, 59, tzinfo=KST)) is None


def calls_of(monkeypatch: pytest.MonkeyPatch, market: Market, method: str) -> list[tuple[object, ...]]:
    """The arguments of every later call of ``market.<method>`` (which still does its work)."""
    calls: list[tuple[object, ...]] = []
    original = getattr(market, method)

    def counted(*args: object) -> object:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(market, method, counted)
    return calls


def test_generation_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """A symbol-day's ticks are built once and then read from the LRU; daily bars never build ticks; a
    range's trading days are walked once and every caller gets its own list."""
    market = Market(11, date(2024, 1, 2))
    built = calls_of(monkeypatch, market, "_build_tape")
    first = market.ticks("005930", DAY)
    assert market.ticks("005930", DAY) == first and built == [("005930", DAY)]
    market.daily_bars("005930", date(2024, 1, 2), DAY - timedelta(days=1))
    assert built == [("005930", DAY)]

    walked = calls_of(monkeypatch, market, "_walk_days")
    year = market.trading_days(DAY - timedelta(days=365), DAY)
    again = market.trading_days(DAY - timedelta(days=365), DAY)
    assert again == year and again is not year and len(walked) == 1
    assert all(market.is_trading_day(d) for d in year) and year == sorted(year)
    assert len(year) == sum(market.is_trading_day(DAY - timedelta(days=n)) for n in range(366))


def test_prices_move_and_stay_in_limits() -> None:
    """Closes differ day to day, and every day's range stays inside +-30 % of its reference price."""
    market = Market(7, date(2024, 1, 2))
    bars = market.daily_bars("035420", date(2026, 1, 1), DAY)
    assert len({b.close for b in bars}) > len(bars) // 2
    for bar in bars:
        assert bar.prev_close * 0.7 <= bar.low <= bar.high <= bar.prev_close * 1.3
    assert round_tick(61_234) == 61_200


def test_split_adjustment() -> None:
    """Before the simulated 5:1 split of 035720 raw prices are five times the adjusted ones."""
    market = Market(7, date(2024, 1, 2))
    before, after = date(2025, 5, 30), date(2025, 6, 2)
    assert market.adjust_factor("035720", before) == 5 and market.adjust_factor("035720", after) == 1
    raw = market.daily_bar("035720", before)
    assert raw is not None
    adjusted = market.series("035720", before, after, "D", True)
    assert abs(adjusted[0].close * 5 - raw.close) <= 5 * tick_size(adjusted[0].close)
    assert market.prev_close("035720", after) == round_tick(raw.close / 5)


def test_weekly_aggregation_labels() -> None:
    """Weekly bars are labelled by their first trading day and sum their days' volume."""
    market = Market(7, date(2024, 1, 2))
    days = market.daily_bars("005930", date(2026, 11, 16), date(2026, 11, 27))
    weeks = aggregate(days, "W")
    assert [w.day for w in weeks] == [date(2026, 11, 16), date(2026, 11, 23)]
    assert weeks[0].volume == sum(d.volume for d in days[:5])
    assert weeks[1].prev_close == days[4].close


async def test_kis_and_kiwoom_minute_bars_identical(sandbox: Sandbox) -> None:
    """For the same symbol and minute, KIS FHKST03010200 and Kiwoom ka10080 give identical OHLCV."""
    kis_token = await sandbox.kis_token()
    kw_token = await sandbox.kiwoom_token()
    for code in ("005930", "000660", "035420", "293490"):
        kis_rows = (await (await sandbox.kis_minutes(kis_token, "102900", code)).json())["output2"]
        body = {"stk_cd": code, "tic_scope": "1", "upd_stkpc_tp": "1"}
        kw = await (await sandbox.kiwoom_post("chart", "ka10080", body, kw_token)).json()
        kw_rows = {r["cntr_tm"]: r for r in kw["stk_min_pole_chart_qry"]}
        assert len(kis_rows) == 30
        for row in kis_rows:
            other = kw_rows[row["stck_bsop_date"] + row["stck_cntg_hour"]]
            assert (
                int(row["stck_oprc"]),
                int(row["stck_hgpr"]),
                int(row["stck_lwpr"]),
                int(row["stck_prpr"]),
                int(row["cntg_vol"]),
            ) == (
                abs(int(other["open_pric"])),
                abs(int(other["high_pric"])),
                abs(int(other["low_pric"])),
                abs(int(other["cur_prc"])),
                int(other["trde_qty"]),
            )
        await sandbox.set_clock(advance_s=1)


async def test_kis_and_kiwoom_daily_bars_identical(sandbox: Sandbox) -> None:
    """KIS FHKST03010100 and Kiwoom ka10081 give identical daily OHLCV."""
    kis_token = await sandbox.kis_token()
    kw_token = await sandbox.kiwoom_token()
    params = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "068270",
        "FID_INPUT_DATE_1": "20260801",
        "FID_INPUT_DATE_2": "20261127",
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "0",
    }
    kis = await (
        await sandbox.kis_get(
            "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice",
            "FHKST03010100",
            params,
            kis_token,
        )
    ).json()
    body = {"stk_cd": "068270", "base_dt": "20261127", "upd_stkpc_tp": "1"}
    kw = await (await sandbox.kiwoom_post("chart", "ka10081", body, kw_token)).json()
    kw_rows = {r["dt"]: r for r in kw["stk_dt_pole_chart_qry"]}
    assert len(kis["output2"]) == 85
    for row in kis["output2"]:
        other = kw_rows[row["stck_bsop_date"]]
        assert (row["stck_oprc"], row["stck_hgpr"], row["stck_lwpr"], row["stck_clpr"], row["acml_vol"]) == (
            other["open_pric"],
            other["high_pric"],
            other["low_pric"],
            other["cur_prc"],
            other["trde_qty"],
        )


async def test_served_bars_match_the_public_feed_api(sandbox: Sandbox) -> None:
    """What the endpoints serve equals Market.minute_bars built from Market.ticks (the feed's source)."""
    token = await sandbox.kis_token()
    rows = (await (await sandbox.kis_minutes(token, "100000")).json())["output2"]
    market = sandbox.state.market
    ticks = [t for t in market.ticks("005930", SESSION_NOW.date()) if t.second // 60 == 600]
    row = rows[0]
    assert row["stck_cntg_hour"] == "100000"
    assert int(row["cntg_vol"]) == sum(t.volume for t in ticks)
    assert (int(row["stck_oprc"]), int(row["stck_prpr"])) == (ticks[0].price, ticks[-1].price)
    assert ticks[0].at(SESSION_NOW.date()) >= SESSION_NOW - timedelta(minutes=30)
