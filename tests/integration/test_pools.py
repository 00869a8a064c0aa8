"""A credential pool and shared reads through real Kafka, Redis and a sandbox process that only knows some
of the keys: reads spread over the keys it accepts, each within its limit at the referee; a member whose
token is refused is passed over; orders name their member; identical reads make one upstream call."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pydantic import SecretStr

from hubclient import HubClient
from hubclient.models import Status
from services import cli, credentials_cli
from services.settings import CredentialSettings, GatewaySettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, fake_credentials, referee
from tests.integration.test_resilience import ORDER
from tests.params import PRICE, distinct_price
from tests.sandbox.test_sandbox_kis_trading import BALANCE  # an account read: TTTC8434R


@asynccontextmanager
async def picky_sandbox(accepted: list[str]) -> AsyncIterator[str]:
    """A sandbox process whose KIS real server issues tokens only to the ``accepted`` appkeys."""
    log_path = processes.LOG_DIR / f"sandbox-pool-{uuid.uuid4().hex[:10]}.log"
    async with processes.sandbox(
        settings={"kis_real_appkeys": json.dumps(accepted)}, log_path=log_path
    ) as running:
        yield running.url


def documents(text: str) -> list[dict[str, object]]:
    """The JSON documents printed one after another (``apihub call`` prints each answer indented)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        document, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
        found.append(document)
    return found


def pool_member(name: str, account: str) -> CredentialSettings:
    key, secret = fake_credentials()
    return CredentialSettings(name=name, appkey=SecretStr(key), secret=SecretStr(secret), account=account)


async def test_pool_spreads_reads_passes_over_a_refused_key_and_binds_orders(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three members a, b, c (c's key unknown to the broker): 150 distinct reads are all ok and served by
    a and b, each at most 20 in any second at the referee; an order without a credential is refused
    credential_required, one naming b reaches the broker with b's key; 20 identical reads make one call;
    ``apihub call --credential b`` serves an account read that fails without it."""
    members = [
        pool_member("a", "50000001-01"),
        pool_member("b", "50000002-01"),
        pool_member("c", "50000003-01"),
    ]
    keys = {m.name: m.appkey.get_secret_value() for m in members}
    async with picky_sandbox([keys["a"], keys["b"]]) as url:
        kis = gateway_settings.kis.model_copy(
            update={"base_url": f"{url}/kis/real", "appkey": None, "appsecret": None, "credentials": members}
        )
        client = HubClient.connect(
            services.kafka_bootstrap,
            caller="pool-test",
            request_topic=topics.requests,
            reply_topic=topics.responses,
        )
        async with gateway(kis=kis) as app, client:
            reads = await asyncio.gather(
                *(client.submit("KIS", "FHKST01010100", distinct_price(), timeout=60) for _ in range(150))
            )
            unnamed = await client.submit("KIS", "TTTC0012U", {**ORDER, "ORD_QTY": "1"}, timeout=30)
            named = await client.submit(
                "KIS", "TTTC0012U", {**ORDER, "CANO": "50000002", "ORD_QTY": "1"}, credential="b", timeout=30
            )
            before = await referee(url, "kis/real", keys["a"]), await referee(url, "kis/real", keys["b"])
            same = await asyncio.gather(
                *(client.submit("KIS", "FHKST01010100", PRICE, timeout=30) for _ in range(20))
            )
            after = await referee(url, "kis/real", keys["a"]), await referee(url, "kis/real", keys["b"])
            pool = credentials_cli.members(app.settings)
            listed = credentials_cli.rows(pool)
            await credentials_cli.fill(app.settings, pool, listed)
            monkeypatch.setenv("APIHUB_KAFKA__BOOTSTRAP_SERVERS", services.kafka_bootstrap)
            monkeypatch.setenv("APIHUB_KAFKA__REQUEST_TOPIC", topics.requests)
            monkeypatch.setenv("APIHUB_KAFKA__RESPONSE_TOPIC", topics.responses)
            balance = ["KIS", "TTTC8434R", *(f"{k}={v}" for k, v in {**BALANCE, "CANO": "50000002"}.items())]
            cli_exits = [
                await asyncio.to_thread(cli.main, ["call", *credential, *balance, "--timeout", "30"])
                for credential in ([], ["--credential", "b"])
            ]
            cli_answers = documents(capsys.readouterr().out)
        stats = {name: await referee(url, "kis/real", key) for name, key in keys.items()}
    assert Counter(r.status for r in reads) == {Status.OK: 150}, Counter((r.status, r.reason) for r in reads)
    assert {r.credential for r in reads} == {"a", "b"}
    for name in ("a", "b"):
        assert stats[name]["requests"] >= 40 and stats[name]["over_limit"] == 0, stats[name]
        assert stats[name]["max_in_window"] <= 20, stats[name]
    assert stats["c"].get("requests", 0) <= 3  # its refused token calls only: then it rests
    assert (unnamed.status, unnamed.reason) == (Status.INVALID, "credential_required")
    assert (named.status, named.credential) == (Status.OK, "b"), named
    # apihub call: an account read without --credential is refused, with it served by that member
    assert cli_exits == [1, 0]
    assert [(a["status"], a["reason"], a["credential"]) for a in cli_answers] == [
        ("invalid", "credential_required", None),
        ("ok", None, "b"),
    ]
    assert {r.status for r in same} == {Status.OK}
    calls = sum(a["requests"] for a in after) - sum(b["requests"] for b in before)
    assert calls == 1, calls
    assert sum(r.shared_with is not None for r in same) == 19
    # apihub credentials: every member, the pace of the two serving, tokens only where issued, no secret
    table = {row.member: row for row in listed if row.provider == "KIS"}
    assert set(table) == {"a", "b", "c"}
    assert all(table[n].sent_10s and (table[n].token_left_s or 0) > 3600 for n in "ab")
    assert table["c"].token_left_s is None and table["a"].account == "5000****-01"
    text = credentials_cli.render(listed)
    assert not any(
        m.appkey.get_secret_value() in text or m.secret.get_secret_value() in text for m in members
    )
