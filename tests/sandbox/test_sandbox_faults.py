"""Faults on demand: latency, 5xx, dropped connections, maintenance, orders that time out after acceptance."""

from __future__ import annotations

import logging
import time

import aiohttp
import pytest

from services.sandbox.settings import FaultSettings
from tests.sandbox.sandbox_kit import TRADING, Sandbox, SandboxFactory, kis_key

ORDER = {
    "CANO": "81055689",
    "ACNT_PRDT_CD": "01",
    "PDNO": "000660",
    "ORD_DVSN": "01",
    "ORD_QTY": "2",
    "ORD_UNPR": "0",
}
MINUTES = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}


async def test_error_rate_answers_5xx(sandbox: Sandbox) -> None:
    """error_rate 1.0 makes every call the configured 5xx in the provider's envelope, counted as a fault."""
    token = await sandbox.kis_token()
    kw_token = await sandbox.kiwoom_token()
    resp = await sandbox.faults(error_rate=1.0, error_status=503)
    assert resp.status == 200 and (await resp.json())["error_rate"] == 1.0
    kis = await sandbox.kis_price(token)
    assert kis.status == 503 and (await kis.json())["msg_cd"] == "EGW00002"
    kiwoom = await sandbox.kiwoom_post("chart", "ka10080", MINUTES, kw_token)
    body = await kiwoom.json()
    assert kiwoom.status == 503 and body["return_code"] == 1 and "[1999:" in body["return_msg"]
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["faults"] == {"error": 1} and stats["by_code"]["EGW00002"] == 1


async def test_drop_rate_cuts_the_connection(sandbox: Sandbox) -> None:
    """drop_rate 1.0 closes the connection without an answer, and the call still counts as an arrival."""
    token = await sandbox.kis_token()
    await sandbox.faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sandbox.kis_price(token)
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["faults"] == {"drop": 1} and stats["window_requests"] == 1


async def test_latency_is_added(sandbox: Sandbox) -> None:
    """A fixed 80 ms latency delays the answer by at least 80 ms."""
    token = await sandbox.kis_token()
    await sandbox.faults(latency_ms=80, latency_distribution="fixed")
    started = time.perf_counter()
    resp = await sandbox.kis_price(token)
    assert resp.status == 200
    assert time.perf_counter() - started >= 0.08
    assert (await sandbox.env_stats("kis/real", kis_key()))["faults"] == {"latency": 1}


def test_latency_distributions() -> None:
    """uniform stays inside mean +- jitter, exponential has about the mean, normal is never negative."""
    from services.sandbox.clock import SimClock
    from services.sandbox.faults import Faults

    def rolls(**kw: object) -> list[float]:
        faults = Faults(FaultSettings.model_validate(kw), SimClock(rate=0.0), lambda: 0)
        return [faults.roll("kis/real").latency_s * 1000 for _ in range(2000)]

    uniform = rolls(latency_ms=100, latency_jitter_ms=20, latency_distribution="uniform")
    assert min(uniform) >= 80 and max(uniform) <= 120
    exponential = rolls(latency_ms=50, latency_distribution="exponential")
    assert 40 < sum(exponential) / len(exponential) < 60
    normal = rolls(latency_ms=5, latency_jitter_ms=10, latency_distribution="normal")
    assert min(normal) == 0.0 and max(normal) > 5


async def test_fault_targets(sandbox: Sandbox) -> None:
    """Faults limited to kis/mock leave kis/real alone."""
    token = await sandbox.kis_token()
    await sandbox.faults(error_rate=1.0, targets=["kis/mock"])
    assert (await sandbox.kis_price(token)).status == 200


async def test_invalid_fault_settings_rejected(sandbox: Sandbox) -> None:
    """An out-of-range or unknown fault field is a 400 and leaves the faults unchanged."""
    assert (await sandbox.faults(error_rate=2.0)).status == 400
    assert (await sandbox.faults(surprise=True)).status == 400
    assert (await sandbox.faults(targets=["kis/paper"])).status == 400
    current = await (await sandbox.client.get("/_sandbox/faults")).json()
    assert current["error_rate"] == 0.0


async def test_maintenance_invalidates_tokens(sandbox: Sandbox) -> None:
    """invalidate_tokens_now kills KIS and Kiwoom tokens; re-issue still waits for the 60 s interval."""
    token = await sandbox.kis_token()
    kw_token = await sandbox.kiwoom_token()
    await sandbox.faults(invalidate_tokens_now=True)
    assert (await (await sandbox.kis_price(token)).json())["msg_cd"] == "EGW00121"
    kw = await (await sandbox.kiwoom_post("chart", "ka10080", MINUTES, kw_token)).json()
    assert "[8005:" in kw["return_msg"]
    assert (await (await sandbox.kis_token_response()).json())["error_code"] == "EGW00133"
    await sandbox.set_clock(advance_s=60)
    fresh = await sandbox.kis_token()
    assert fresh != token and (await sandbox.kis_price(fresh)).status == 200
    assert (await sandbox.stats())["maintenances"] == 1


async def test_periodic_maintenance(make_sandbox: SandboxFactory) -> None:
    """token_invalidate_every_s (a setting) kills tokens once that much simulated time has passed."""
    sandbox = await make_sandbox(faults={"token_invalidate_every_s": 3600})
    token = await sandbox.kis_token()
    await sandbox.set_clock(advance_s=3599)
    assert (await sandbox.kis_price(token)).status == 200
    await sandbox.set_clock(advance_s=1)
    assert (await (await sandbox.kis_price(token)).json())["msg_cd"] == "EGW00121"


async def test_kis_order_accepted_but_timed_out(sandbox: Sandbox) -> None:
    """With order_timeout_rate 1.0 a KIS order answers HTTP 500 EGW00301 after the delay, yet it executed."""
    token = await sandbox.kis_token()
    await sandbox.faults(order_timeout_rate=1.0, order_timeout_delay_ms=50)
    started = time.perf_counter()
    resp = await sandbox.client.post(
        f"/kis/real{TRADING}/order-cash", json=ORDER, headers=sandbox.kis_headers("TTTC0011U", token)
    )
    assert time.perf_counter() - started >= 0.05
    assert resp.status == 500
    assert (await resp.json())["msg_cd"] == "EGW00301"
    orders = (await (await sandbox.client.get("/_sandbox/orders")).json())["orders"]
    assert [(o["side"], o["symbol"], o["timed_out"]) for o in orders] == [("sell", "000660", True)]
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert (stats["orders_accepted"], stats["orders_timed_out"]) == (1, 1)


async def test_kiwoom_order_accepted_but_connection_lost(sandbox: Sandbox) -> None:
    """With order_timeout_rate 1.0 a Kiwoom order is recorded and its connection is cut."""
    token = await sandbox.kiwoom_token()
    await sandbox.faults(order_timeout_rate=1.0)
    order = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "1", "ord_uv": "", "trde_tp": "3"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sandbox.kiwoom_post("ordr", "kt10000", order, token)
    assert [(o.side, o.timed_out) for o in sandbox.state.orders] == [("buy", True)]


async def test_reset_can_restore_faults(sandbox: Sandbox) -> None:
    """POST /_sandbox/reset {"faults": true} restores the start-up faults."""
    await sandbox.faults(error_rate=1.0)
    await sandbox.client.post("/_sandbox/reset", json={"faults": True})
    assert (await (await sandbox.client.get("/_sandbox/faults")).json())["error_rate"] == 0.0


async def test_fault_changes_are_logged_as_events_with_fields(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault change and a maintenance are events with fields (they were free text under
    ``"event": "services.log"``): the faults now in force, and how many tokens died."""
    await sandbox.kis_token()
    caplog.set_level(logging.INFO, logger="services.sandbox")
    resp = await sandbox.faults(error_rate=0.5, invalidate_tokens_now=True)
    assert resp.status == 200
    fields = {r.getMessage(): getattr(r, "fields", None) for r in caplog.records}
    assert fields["sandbox.faults.updated"] == {"faults": {**FaultSettings().model_dump(), "error_rate": 0.5}}
    assert fields["sandbox.maintenance"] == {"tokens_invalidated": 1}
