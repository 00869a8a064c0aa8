"""The sandbox as a process: settings, health, admin endpoints, serve() lifecycle, simulated clock."""

from __future__ import annotations

import asyncio
import socket
from datetime import date, datetime

import aiohttp
import pytest

from services.sandbox.app import serve
from services.sandbox.clock import KST, SimClock
from services.sandbox.settings import SandboxSettings
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox


def test_settings_defaults() -> None:
    """Defaults match the brief: 127.0.0.1:18080, KIS 20/2, Kiwoom 5/5 per second, 60 s issuance, 500/429."""
    s = SandboxSettings()
    assert (s.host, s.port) == ("127.0.0.1", 18080)
    assert (s.kis_real_rate_per_s, s.kis_mock_rate_per_s) == (20, 2)
    assert (s.kiwoom_real_rate_per_s, s.kiwoom_mock_rate_per_s) == (5, 5)
    assert s.token_issue_interval_s == 60.0
    assert (s.kis_throttle_status, s.kiwoom_throttle_status) == (500, 429)
    assert s.kis_real_appkeys == [] and s.faults.error_rate == 0.0


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """APIHUB_SANDBOX__ variables (nested with __) override the defaults."""
    monkeypatch.setenv("APIHUB_SANDBOX__KIS_REAL_RATE_PER_S", "7")
    monkeypatch.setenv("APIHUB_SANDBOX__FAULTS__ERROR_RATE", "0.25")
    monkeypatch.setenv("APIHUB_SANDBOX__KIS_MOCK_APPKEYS", '["abc"]')
    s = SandboxSettings()
    assert s.kis_real_rate_per_s == 7
    assert s.faults.error_rate == 0.25
    assert s.kis_mock_appkeys == ["abc"]


async def test_healthz(sandbox: Sandbox) -> None:
    """GET /healthz answers 200 {"status": "ok"}."""
    resp = await sandbox.client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_serve_runs_until_cancelled() -> None:
    """serve() listens on the configured port, answers /healthz and releases the port when cancelled."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    task = asyncio.create_task(serve(SandboxSettings(port=port)))
    try:
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + 30  # a bound only: it starts in well under 1 s
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        assert await resp.json() == {"status": "ok"}
                        break
                except aiohttp.ClientConnectionError:
                    if asyncio.get_running_loop().time() > deadline:
                        pytest.fail("sandbox did not start")
                    await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again


async def test_clock_endpoint_sets_and_reads(sandbox: Sandbox) -> None:
    """POST /_sandbox/clock sets now (naive = KST), advances it, and GET reports it."""
    resp = await sandbox.client.get("/_sandbox/clock")
    assert (await resp.json())["now"] == SESSION_NOW.isoformat()
    data = await sandbox.set_clock(now="2026-11-26T14:00:00")
    assert data["now"] == "2026-11-26T14:00:00+09:00"
    data = await sandbox.set_clock(advance_s=90)
    assert data["now"] == "2026-11-26T14:01:30+09:00"
    data = await sandbox.set_clock(now="2026-11-26T05:00:00+00:00")
    assert data["now"] == "2026-11-26T14:00:00+09:00"
    bad = await sandbox.client.post("/_sandbox/clock", json={"now": "yesterday"})
    assert bad.status == 400


def test_clock_monotonic_moves_forward_only() -> None:
    """Forward jumps advance the limiter's monotonic time; backward jumps do not move it back."""
    clock = SimClock(SESSION_NOW, rate=0.0)
    assert clock.monotonic() == 0.0
    clock.advance(61)
    assert clock.monotonic() == pytest.approx(61.0)
    clock.set(now=SESSION_NOW)
    assert clock.now() == SESSION_NOW
    assert clock.monotonic() == pytest.approx(61.0)
    with pytest.raises(ValueError, match="advance_s"):
        clock.advance(-1)


def test_clock_default_is_latest_weekday_at_close() -> None:
    """Without clock_start the clock starts on the latest weekday at 15:30 KST and runs at real speed."""
    clock = SimClock(None, rate=1.0)
    now = clock.now()
    assert now.weekday() < 5
    assert (now.hour, now.minute) == (15, 30)
    assert (datetime.now(KST).date() - now.date()).days in (0, 1, 2)


@pytest.mark.parametrize("start_time", ["09:00", "09:00:00"])
def test_clock_start_time_of_day_takes_minutes_with_or_without_seconds(
    monkeypatch: pytest.MonkeyPatch, start_time: str
) -> None:
    """``APIHUB_SANDBOX__CLOCK_START_TIME_KST=09:00`` is 09:00:00 (the clock used to need the seconds)."""
    monkeypatch.setenv("APIHUB_SANDBOX__CLOCK_START_TIME_KST", start_time)
    settings = SandboxSettings()
    now = SimClock(settings.clock_start, 0.0, settings.clock_start_time_kst).now()
    assert (now.hour, now.minute, now.second) == (9, 0, 0)


def test_clock_start_on_the_market_first_day_is_accepted() -> None:
    """The first instant ``POST /_sandbox/clock`` allows is a start-up instant too (naive = KST)."""
    settings = SandboxSettings(market_history_start=date(2024, 1, 2), clock_start=datetime(2024, 1, 2))
    assert SimClock(settings.clock_start, 0.0).now() == datetime(2024, 1, 2, tzinfo=KST)


async def test_unknown_path_is_404(sandbox: Sandbox) -> None:
    """Paths outside the four environments and the admin API are 404."""
    resp = await sandbox.client.get("/kis/paper/uapi/domestic-stock/v1/quotations/inquire-price")
    assert resp.status == 404


async def test_symbols_and_orders_endpoints(sandbox: Sandbox) -> None:
    """GET /_sandbox/symbols lists the master (with 005930 Samsung Electronics); orders start empty."""
    symbols = (await (await sandbox.client.get("/_sandbox/symbols")).json())["symbols"]
    codes = {s["code"]: s["name_en"] for s in symbols}
    assert len(codes) >= 30
    assert codes["005930"] == "Samsung Electronics" and codes["000660"] == "SK hynix" and "035420" in codes
    assert (await (await sandbox.client.get("/_sandbox/orders")).json()) == {"orders": []}
