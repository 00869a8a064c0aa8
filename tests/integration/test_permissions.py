"""Caller permissions through the real hub: hubclient → Kafka → gateway (permissions file) → sandbox."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hubclient import HubClient
from hubclient.models import Status
from services.settings import GatewaySettings
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, appkey, referee
from tests.integration.test_classes_and_credentials import KIWOOM_ORDER
from tests.params import PRICE
from tests.sandbox.test_sandbox_kis_trading import BALANCE

PERMISSIONS = """
callers:
  trader:
    - kinds: [quote, read]
    - providers: [KIWOOM]
      tr_ids: [kt10000]
"""


def hub(services: Services, topics: Topics, caller: str) -> HubClient:
    return HubClient.connect(
        services.kafka_bootstrap, caller=caller, request_topic=topics.requests, reply_topic=topics.responses
    )


async def test_unlisted_caller_reads_quotes_but_orders_and_accounts_need_a_grant(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a permissions file an unlisted caller gets its quote but its order and balance are answered
    rejected/not_permitted, logged and never reach the sandbox; a caller granted the order is served."""
    path = tmp_path / "permissions.yaml"
    path.write_text(PERMISSIONS)
    with caplog.at_level(logging.WARNING, logger="services.gateway.permissions"):
        async with gateway(permissions_file=str(path)):
            async with hub(services, topics, "stranger") as client:
                price = await client.submit("KIS", "FHKST01010100", PRICE, timeout=30)
                order = await client.submit("KIWOOM", "kt10000", KIWOOM_ORDER, timeout=30)
                balance = await client.submit("KIS", "TTTC8434R", BALANCE, timeout=30)
            kiwoom_before = await referee(sandbox_url, "kiwoom/real", appkey(gateway_settings, "KIWOOM"))
            async with hub(services, topics, "trader") as client:
                granted = await client.submit("KIWOOM", "kt10000", KIWOOM_ORDER, timeout=30)
    kis = await referee(sandbox_url, "kis/real", appkey(gateway_settings))
    kiwoom = await referee(sandbox_url, "kiwoom/real", appkey(gateway_settings, "KIWOOM"))
    assert price.status is Status.OK
    for refused in (order, balance):
        assert (refused.status, refused.reason) == (Status.REJECTED, "not_permitted")
    assert granted.status is Status.OK
    assert kis.get("by_tr_id", {}).get("TTTC8434R", 0) == 0
    assert kiwoom_before.get("by_tr_id", {}).get("kt10000", 0) == 0
    assert kiwoom["by_tr_id"]["kt10000"] == 1
    logged = [r.fields for r in caplog.records if r.msg == "request.not_permitted"]  # type: ignore[attr-defined]
    assert {(f["caller"], f["provider"], f["tr_id"]) for f in logged} == {
        ("stranger", "KIWOOM", "kt10000"),
        ("stranger", "KIS", "TTTC8434R"),
    }


async def test_without_a_permissions_file_every_caller_may_order(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """Without APIHUB_PERMISSIONS_FILE the gateway behaves as before: any caller's order is served."""
    async with gateway(), hub(services, topics, "stranger") as client:
        order = await client.submit("KIWOOM", "kt10000", KIWOOM_ORDER, timeout=30)
    assert order.status is Status.OK
