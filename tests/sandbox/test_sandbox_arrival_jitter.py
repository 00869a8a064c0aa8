"""Arrival jitter: a random real wait before the referee counts a request, so concurrent arrivals reorder."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.sandbox.clock import SimClock
from services.sandbox.faults import Faults
from services.sandbox.referee import Arrival, Referee
from services.sandbox.settings import FaultSettings, SandboxSettings
from services.settings import SettingsInvalid
from tests.sandbox.sandbox_kit import TRADING, Sandbox, SandboxFactory, kis_key

JITTER_MS = 40.0
BATCH = 20  # the KIS real limit, so the frozen window refuses none of the batch
MINUTES = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}


def _faults(**settings: object) -> Faults:
    return Faults(FaultSettings.model_validate(settings), SimClock(rate=0.0), lambda: 0)


def _order(quantity: int) -> dict[str, str]:
    return {
        "CANO": "81055689",
        "ACNT_PRDT_CD": "01",
        "PDNO": "005930",
        "ORD_DVSN": "01",
        "ORD_QTY": str(quantity),
        "ORD_UNPR": "0",
    }


def test_jitter_draws_stay_within_bounds() -> None:
    """Delays are uniform over [0, J]: never outside it, spread over all of it, mean about J / 2."""
    faults = _faults(arrival_jitter_ms=JITTER_MS)
    delays_ms = [faults.arrival_delay_s("kis/real") * 1000 for _ in range(2000)]
    assert 0.0 <= min(delays_ms) < 2.0 and JITTER_MS - 2.0 < max(delays_ms) <= JITTER_MS
    assert 18.0 < sum(delays_ms) / len(delays_ms) < 22.0


def test_jitter_leaves_the_fault_dice_alone() -> None:
    """The other faults roll the same sequence with or without jitter, and J = 0 draws nothing."""
    dice = {"drop_rate": 0.1, "error_rate": 0.5, "latency_ms": 50, "latency_jitter_ms": 20}
    plain = _faults(**dice, latency_distribution="uniform")
    jittered = _faults(**dice, latency_distribution="uniform", arrival_jitter_ms=JITTER_MS)
    expected = [plain.roll("kis/real") for _ in range(200)]
    got = []
    for _ in range(200):
        assert jittered.arrival_delay_s("kis/real") > 0
        got.append(jittered.roll("kis/real"))
    assert got == expected
    off = _faults()
    assert [off.arrival_delay_s("kis/real") for _ in range(50)] == [0.0] * 50
    off.update({"arrival_jitter_ms": JITTER_MS})
    assert off.arrival_delay_s("kis/real") == _faults(arrival_jitter_ms=JITTER_MS).arrival_delay_s("kis/real")


async def test_jitter_delays_and_reorders_a_batch(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The referee counts a concurrent batch spread over its drawn delays; the ledger is out of send order."""
    token = await sandbox.kis_token()
    referee, faults = sandbox.state.referee, sandbox.state.faults
    counted_at: list[float] = []
    waiting = [0, 0]  # requests in their jitter wait now, and the most at once
    draw = faults.arrival_delay_s

    def drawn(env_id: str) -> float:
        waiting[0] += 1
        waiting[1] = max(waiting)
        return draw(env_id)

    def arrive(
        env_id: str, appkey: str | None, tr_id: str, in_window: bool = True, *, ago_ns: int | None = None
    ) -> Arrival:
        waiting[0] -= 1
        counted_at.append(time.perf_counter())
        return Referee.arrive(referee, env_id, appkey, tr_id, in_window, ago_ns=ago_ns)

    monkeypatch.setattr(faults, "arrival_delay_s", drawn)
    monkeypatch.setattr(referee, "arrive", arrive)
    resp = await sandbox.faults(arrival_jitter_ms=JITTER_MS)
    assert resp.status == 200 and (await resp.json())["arrival_jitter_ms"] == JITTER_MS
    shadow = _faults(arrival_jitter_ms=JITTER_MS)  # same seed: the delays the sandbox will draw
    longest_s = max(shadow.arrival_delay_s("kis/real") for _ in range(BATCH))
    assert longest_s > 0.03
    headers = sandbox.kis_headers("TTTC0012U", token)
    url = f"/kis/real{TRADING}/order-cash"
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(sandbox.client.post(url, json=_order(n), headers=headers) for n in range(1, BATCH + 1))
    )
    elapsed_s = time.perf_counter() - started
    assert [r.status for r in replies] == [200] * BATCH
    # The waits are real and overlap: the batch is not served one wait after another. (Told by the order of
    # draws and arrivals, not by the batch's wall time, which a loaded host stretches past any small bound.)
    assert elapsed_s >= longest_s and waiting[1] > 1
    assert len(counted_at) == BATCH and max(counted_at) - started >= longest_s
    arrived = [order.quantity for order in sandbox.state.orders]
    assert sorted(arrived) == list(range(1, BATCH + 1)) and arrived != sorted(arrived)
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["faults"] == {"arrival_jitter": BATCH} and stats["over_limit"] == 0


async def test_zero_jitter_changes_nothing(sandbox: Sandbox) -> None:
    """With arrival_jitter_ms 0 no request is delayed or counted as jittered."""
    token = await sandbox.kis_token()
    resp = await sandbox.faults(arrival_jitter_ms=0)
    assert resp.status == 200 and (await resp.json())["arrival_jitter_ms"] == 0.0
    replies = await asyncio.gather(*(sandbox.kis_price(token) for _ in range(5)))
    assert [r.status for r in replies] == [200] * 5
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["faults"] == {} and stats["window_requests"] == 5


async def test_jitter_honours_targets(sandbox: Sandbox) -> None:
    """Jitter aimed at kiwoom/real delays Kiwoom calls only, not KIS ones."""
    token = await sandbox.kis_token()
    kw_token = await sandbox.kiwoom_token()
    await sandbox.faults(arrival_jitter_ms=JITTER_MS, targets=["kiwoom/real"])
    assert (await sandbox.kis_price(token)).status == 200
    assert (await sandbox.kiwoom_post("chart", "ka10080", MINUTES, kw_token)).status == 200
    assert (await sandbox.env_stats("kis/real"))["faults"] == {}
    assert (await sandbox.env_stats("kiwoom/real"))["faults"] == {"arrival_jitter": 1}


async def test_negative_jitter_refused(sandbox: Sandbox) -> None:
    """A negative arrival_jitter_ms is a 400 at runtime (faults unchanged) and invalid at start-up."""
    assert (await sandbox.faults(arrival_jitter_ms=-1)).status == 400
    current = await (await sandbox.client.get("/_sandbox/faults")).json()
    assert current["arrival_jitter_ms"] == 0.0
    with pytest.raises(SettingsInvalid, match=r"^APIHUB_SANDBOX__FAULTS__ARRIVAL_JITTER_MS: Input should be"):
        SandboxSettings(faults={"arrival_jitter_ms": -1})


async def test_jitter_set_from_the_environment(
    make_sandbox: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APIHUB_SANDBOX__FAULTS__ARRIVAL_JITTER_MS configures the jitter at start-up."""
    monkeypatch.setenv("APIHUB_SANDBOX__FAULTS__ARRIVAL_JITTER_MS", "5")
    sandbox = await make_sandbox()
    assert sandbox.state.faults.settings.arrival_jitter_ms == 5.0
    token = await sandbox.kis_token()
    assert (await sandbox.kis_price(token)).status == 200
    assert (await sandbox.env_stats("kis/real", kis_key()))["faults"] == {"arrival_jitter": 2}
