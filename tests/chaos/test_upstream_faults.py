"""Scenario (e): the broker misbehaves in turn under load: latency spikes, a 5xx burst, cut connections,
the token revoked early, and orders that time out after the broker accepted them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from hubclient.models import Status
from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, conclude, drive, key_counters, sandbox_get
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey, sandbox_server
from tests.processes import set_faults

KIS = ["kis/real"]
UPSTREAM_TIMEOUT_S = 2.0  # the gateways' KIS HTTP timeout; timed-out orders are answered after 3 s
#: (seconds into the run, what the sandbox does from then on, a name for the notes). The token is revoked
#: last: the broker issues one a minute, so the gateway may only get a new one a minute after the first.
PHASES: list[tuple[float, dict[str, object], str]] = [
    (6, {"latency_ms": 350, "latency_jitter_ms": 300, "latency_distribution": "uniform"}, "latency spikes"),
    (14, {"latency_ms": 0, "latency_jitter_ms": 0, "drop_rate": 0.3}, "dropped connections"),
    (22, {"drop_rate": 0.0, "order_timeout_rate": 0.6, "order_timeout_delay_ms": 3000}, "orders time out"),
    (30, {"order_timeout_rate": 0.0, "error_rate": 0.5, "error_status": 503}, "5xx burst"),
    (38, {"error_rate": 0.0}, "calm"),
    (48, {"invalidate_tokens_now": True}, "token revoked"),
]
REVOKED_AT_S = 48.0
NEW_TOKEN_FROM_S = 66.0  # a minute after the first token (issued before the first send) and some slack
REFUSALS_EXPECTED = {"rejected/circuit_open", "rejected/token_unavailable", "rejected/deadline_unreachable"}
RUN_S = 80.0


@pytest.mark.timeout(300)
async def test_upstream_faults_in_turn(
    services: Services, topics: Topics, gateway_settings: GatewaySettings
) -> None:
    """Two gateways on a sandbox of their own whose KIS misbehaves in phases: every request gets one terminal
    answer, reads end ok or upstream_error, every order that timed out after acceptance is answered
    unknown_outcome and reached the broker once, no arrival over the limit, refusals only for an open circuit
    or a missing token, and after the token was revoked one new token a minute after the first (none asked
    for sooner) and reads ok again."""
    async with sandbox_server(faults={"targets": KIS, "seed": 23}) as url:
        settings = gateway_settings.model_copy(
            update={
                "kis": gateway_settings.kis.model_copy(update={"base_url": f"{url}/kis/real"}),
                "kiwoom": gateway_settings.kiwoom.model_copy(update={"base_url": f"{url}/kiwoom/real"}),
            }
        )
        plan = LoadPlan(fraction=0.8, seconds=RUN_S, callers=4, order_every=8)
        applied: list[str] = []
        async with gateway_fleet(settings, 2, {"APIHUB_KIS__TIMEOUT_S": str(UPSTREAM_TIMEOUT_S)}):

            async def phases() -> None:
                start = time.monotonic()
                for at_s, faults, name in PHASES:
                    await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
                    await set_faults(url, faults)
                    applied.append(f"{at_s:.0f} s {name}")

            result = await drive(
                services.kafka_bootstrap,
                topics.requests,
                topics.responses,
                url,
                appkey(settings),
                plan,
                during=phases,
            )
        ledger = [
            o
            for o in (await sandbox_get(url, "/_sandbox/orders"))["orders"]
            if o["appkey"] == appkey(settings)
        ]
        counters = await key_counters(url, "kis/real", appkey(settings))
    unknown = [rid for rid, q in result.orders.items() if result.answers.get(rid) == Status.UNKNOWN_OUTCOME]
    timed_out_accepted = [o for o in ledger if o["timed_out"]]
    read_statuses = Counter(s for rid, s in result.answers.items() if rid not in result.orders)
    after_new_token = result.ok_rate(NEW_TOKEN_FROM_S, RUN_S)
    conclude(
        result,
        "upstream-faults",
        "Broker faults in turn: latency spikes, 5xx burst, cut connections, token revoked, orders timing out",
        [
            "phases: " + ", ".join(applied),
            f"{len(timed_out_accepted)} orders accepted then timed out; {len(unknown)} unknown_outcome",
            f"tokens issued {counters.get('tokens_issued', 0)}, refused {counters.get('token_refusals', 0)}; "
            f"ok answers/s from {NEW_TOKEN_FROM_S:.0f} s on {after_new_token:.1f}",
        ],
    )
    assert len(applied) == len(PHASES)
    assert set(read_statuses) <= {Status.OK, Status.UPSTREAM_ERROR, Status.REJECTED}, read_statuses
    refusals = {r for r in result.reasons if r.startswith("rejected/")}
    assert refusals <= REFUSALS_EXPECTED, refusals
    assert timed_out_accepted, "no order timed out after the broker accepted it"
    for rid in result.orders:
        status = result.answers.get(rid)
        assert status in (Status.OK, Status.UNKNOWN_OUTCOME, Status.UPSTREAM_ERROR, Status.REJECTED), status
    for order in timed_out_accepted:
        rid = next(r for r, q in result.orders.items() if q == order["quantity"])
        assert result.answers[rid] == Status.UNKNOWN_OUTCOME, (order, result.answers[rid])
    assert after_new_token > 0.5 * plan.rate_per_s, f"{after_new_token:.1f} ok/s once a new token was allowed"
    assert counters.get("tokens_issued") == 2 and counters.get("token_refusals") == 0, counters
