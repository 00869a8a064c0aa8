"""Limit classes, mock mapping and WebSocket credentials through the real hub: hubclient → Kafka → gateway
(Redis) → sandbox process → Kafka → hubclient. The sandbox's referee counts every class per appkey."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from hubclient import HubClient, RequestRejected
from hubclient.catalog import lookup
from hubclient.models import ApiResponse, Provider, Status
from services.settings import GatewaySettings, KisSettings, KiwoomSettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, appkey, fake_credentials, referee
from tests.params import distinct_price
from tests.sandbox.test_sandbox_kis_trading import BALANCE

KIWOOM_ORDER = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "1", "ord_uv": "", "trde_tp": "3"}
DAILY = {"stk_cd": "005930", "base_dt": "20261127", "upd_stkpc_tp": "1"}


def hub(services: Services, topics: Topics, caller: str = "class-test") -> HubClient:
    return HubClient.connect(
        services.kafka_bootstrap, caller=caller, request_topic=topics.requests, reply_topic=topics.responses
    )


@asynccontextmanager
async def limited_sandbox(**settings: object) -> AsyncIterator[str]:
    """A sandbox process of this test's own with class limits (and other settings) switched on."""
    log_path = processes.LOG_DIR / f"sandbox-classes-{uuid.uuid4().hex[:10]}.log"
    async with processes.sandbox(settings=settings, log_path=log_path) as running:
        yield running.url


def on_sandbox(settings: GatewaySettings, url: str, environment: str = "real") -> dict[str, Any]:
    """Overrides that point both providers of ``settings`` at the sandbox ``url`` (real or mock servers)."""
    return {
        "kis": settings.kis.model_copy(update={"base_url": f"{url}/kis/{environment}"}),
        "kiwoom": settings.kiwoom.model_copy(update={"base_url": f"{url}/kiwoom/{environment}"}),
    }


async def test_one_call_per_class_and_each_class_within_its_limit(
    services: Services, topics: Topics, gateway: GatewayFactory, gateway_settings: GatewaySettings
) -> None:
    """Against a sandbox that limits the KIS ledger to 4/s and Kiwoom orders to 1/s, bursts of every class
    (KIS quotes and balances, Kiwoom reads and orders) are all served and no class goes over its limit."""
    async with limited_sandbox(kis_ledger_rate_per_s=4, kiwoom_order_rate_per_s=1) as url:
        overrides = on_sandbox(gateway_settings, url)
        overrides["kis"] = overrides["kis"].model_copy(update={"ledger_rate_per_s": 4})
        overrides["kiwoom"] = overrides["kiwoom"].model_copy(update={"order_rate_per_s": 1})
        # distinct reads (identical ones in flight together would share one call): symbols, accounts
        calls = [("KIS", "FHKST01010100", distinct_price()) for _ in range(10)]
        calls += [("KIS", "TTTC8434R", {**BALANCE, "CANO": f"810556{i:02d}"}) for i in range(8)]
        calls += [
            ("KIWOOM", "ka10081", {**DAILY, "stk_cd": code})
            for code in ("005930", "000660", "035420", "035720")
        ]
        calls += [("KIWOOM", "kt10000", KIWOOM_ORDER)] * 3
        async with gateway(**overrides), hub(services, topics) as client:
            answers = await asyncio.gather(
                *(client.submit(p, t, params, timeout=30) for p, t, params in calls)
            )
        kis = await referee(url, "kis/real", appkey(gateway_settings))
        kiwoom = await referee(url, "kiwoom/real", appkey(gateway_settings, "KIWOOM"))
    assert Counter((a.status, a.reason) for a in answers) == {(Status.OK, None): len(calls)}
    assert answers[10].data["rt_cd"] == "0" and answers[-1].data["return_code"] == 0
    assert kis["classes"]["ledger"]["requests"] == 8 and kis["classes"]["ledger"]["over_limit"] == 0, kis
    assert kis["classes"]["ledger"]["max_in_window"] <= 4 and kis["max_in_window"] <= 20
    assert kiwoom["classes"]["order"] == {"rate_per_s": 1, "requests": 3, "max_in_window": 1, "over_limit": 0}
    assert kiwoom["max_in_window"] <= 5 and kiwoom["over_limit"] == 0 and kis["over_limit"] == 0


async def test_mock_credential_maps_ids_and_refuses_what_the_mock_server_lacks(
    services: Services, topics: Topics, gateway: GatewayFactory, gateway_settings: GatewaySettings
) -> None:
    """With a mock credential a balance request (real id TTTC8434R) reaches the mock server as VTTC8434R
    and is served; a real-only quote and order are answered rejected/not_in_mock and never reach it."""
    key, secret = fake_credentials()
    async with limited_sandbox() as url:
        kis = KisSettings(
            base_url=f"{url}/kis/mock", environment="mock", appkey=key, appsecret=secret, rate_per_s=2
        )
        real_only = ["FHKST03010230", "TTTC0051U"]  # a quote and an order the mock server lacks
        async with gateway(kis=kis), hub(services, topics) as client:
            balance = await client.submit("KIS", "TTTC8434R", BALANCE, timeout=30)
            refused = [
                await client.submit("KIS", t, dict.fromkeys(lookup("KIS", t).required, ""), timeout=30)
                for t in real_only
            ]
        counters = await referee(url, "kis/mock", key)
    assert balance.ok and balance.data["rt_cd"] == "0"
    assert [(r.status, r.reason) for r in refused] == [(Status.REJECTED, "not_in_mock")] * 2
    assert counters["by_tr_id"].get("VTTC8434R") == 1
    assert not {*real_only, "TTTC8434R"} & set(counters["by_tr_id"])


async def test_websocket_credentials_for_both_providers(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
) -> None:
    """KIS lends its approval key, issued once by /oauth2/Approval and lent again from the store (also by
    a second gateway instance); Kiwoom lends the token the gateway itself calls with; no extra token."""
    async with gateway(), hub(services, topics, caller="kis-service") as client:
        first = await client.websocket_credentials("KIS", timeout=20)
        served: ApiResponse = await client.execute("KIWOOM", "ka10081", DAILY, timeout=20)
        kiwoom = await client.websocket_credentials(Provider.KIWOOM, timeout=20)
    async with gateway(instance_id=f"{gateway_settings.instance_id}-b"), hub(services, topics) as client:
        again = await client.websocket_credentials("KIS", timeout=20)
    kis_counters = await referee(sandbox_url, "kis/real", appkey(gateway_settings))
    kiwoom_counters = await referee(sandbox_url, "kiwoom/real", appkey(gateway_settings, "KIWOOM"))
    assert (first.kind, kiwoom.kind) == ("approval_key", "access_token")
    assert again.secret == first.secret and again.expires_at_ms == first.expires_at_ms
    assert served.ok and kiwoom.expires_at_ms > first.expires_at_ms - 86_400_000
    assert kis_counters["by_tr_id"].get("Approval") == 1 and kis_counters["tokens_issued"] == 0
    assert kiwoom_counters["tokens_issued"] == 1


async def test_websocket_credentials_refused_without_a_credential(
    services: Services, topics: Topics, gateway: GatewayFactory, gateway_settings: GatewaySettings
) -> None:
    """A gateway whose KIS appkey the sandbox refuses answers the collector rejected/token_unavailable."""
    kis = gateway_settings.kis.model_copy(update={"appkey": SecretStr("short")})
    async with gateway(kis=kis), hub(services, topics) as client:
        with pytest.raises(RequestRejected) as caught:
            await client.websocket_credentials("KIS", timeout=20)
    assert caught.value.reason == "token_unavailable"


def test_kiwoom_settings_have_both_classes() -> None:
    """The gateway settings name a rate for each Kiwoom class and the KIS ledger."""
    assert KiwoomSettings().order_rate_per_s < KiwoomSettings().query_rate_per_s
    assert KisSettings().ledger_rate_per_s < KisSettings().rate_per_s
