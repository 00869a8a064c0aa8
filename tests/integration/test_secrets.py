"""Secret hygiene: after a gateway process served tokens, quotes, account calls, an order and bad input,
no appkey, app secret or issued token appears in any record or header, the log, /metrics or the referee.

The sandbox's ``/_sandbox/stats`` names appkeys by a hash (``referee.appkey_label``), so it is scanned
like every other place.

``websocket_credentials`` is left out on purpose: its answer carries a token to the asking collector by
design (docs/GATEWAY.md, WebSocket credentials), so the response topic would hold it.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from hubclient import HubClient
from hubclient.models import Status
from services.settings import GatewaySettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, appkey, gateway_process, read_committed
from tests.integration.test_classes_and_credentials import DAILY, KIWOOM_ORDER
from tests.params import PRICE
from tests.sandbox.test_sandbox_kis_trading import BALANCE


def leaks(places: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    """``place: secret name`` for every secret found in a place (raw bytes, so any encoding of the text)."""
    return [
        f"{place}: {name}"
        for place, data in places.items()
        for name, secret in secrets.items()
        if secret.encode() in data
    ]


async def issued_tokens(redis_url: str, prefix: str) -> dict[str, str]:
    """The access tokens the gateway keeps under its Redis ``prefix`` (``token:<provider>:...`` hashes)."""
    found: dict[str, str] = {}
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        async for key in redis.scan_iter(match=f"{prefix}*"):
            if await redis.type(key) == "hash" and (token := await redis.hget(key, "access_token")):
                kind, provider = str(key).removeprefix(prefix).split(":")[:2]
                found[f"{kind} {provider}"] = str(token)
    return found


async def test_no_secret_in_anything_a_run_produced(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """Appkeys, secrets and issued tokens appear in no record value or header of the request, response
    and dead-letter topics, nor in the gateway's log file, its /metrics or the sandbox's stats."""
    settings = gateway_settings
    assert settings.kis.appkey and settings.kis.appsecret and settings.kiwoom.appkey
    assert settings.kiwoom.secretkey
    secrets = {
        "KIS appkey": settings.kis.appkey.get_secret_value(),
        "KIS appsecret": settings.kis.appsecret.get_secret_value(),
        "Kiwoom appkey": settings.kiwoom.appkey.get_secret_value(),
        "Kiwoom secretkey": settings.kiwoom.secretkey.get_secret_value(),
    }
    async with gateway_process(settings) as gateway:
        async with HubClient.connect(
            services.kafka_bootstrap,
            caller="secret-scan",
            request_topic=topics.requests,
            reply_topic=topics.responses,
        ) as client:
            calls = [("KIS", "FHKST01010100", PRICE)] * 3 + [("KIS", "TTTC8434R", BALANCE)]
            calls += [("KIWOOM", "ka10081", DAILY)] * 2 + [("KIWOOM", "kt10000", KIWOOM_ORDER)]
            answers = await asyncio.gather(*(client.submit(p, t, q, timeout=30) for p, t, q in calls))
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        await producer.start()
        try:  # bad input, so the dead-letter topic has records to scan
            await producer.send_and_wait(topics.requests, b"\x00not json", headers=[("x-probe", b"1")])
            await producer.send_and_wait(topics.requests, b'{"provider": "KIS", "tr_id": 7}')
        finally:
            await producer.stop()
        dead = await read_committed(services.kafka_bootstrap, topics.dlq, count=2)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.metrics_url}/metrics") as resp:
                metrics = await resp.read()
            async with session.get(f"{sandbox_url}/_sandbox/stats") as resp:
                stats = await resp.read()
        tokens = await issued_tokens(services.redis_url, settings.redis.key_prefix)
    assert [a.status for a in answers] == [Status.OK] * len(calls)
    assert set(tokens) == {"token KIS", "token KIWOOM"}  # both issued, so both are looked for
    secrets |= tokens
    assert all(len(s) >= 16 for s in secrets.values())  # long enough that a match is never chance

    places: dict[str, bytes] = {
        "gateway log": (processes.LOG_DIR / f"gateway-{settings.instance_id}.log").read_bytes(),
        "/metrics": metrics,
        "/_sandbox/stats": stats,
    }
    for topic in (topics.requests, topics.responses):
        records = await read_committed(services.kafka_bootstrap, topic)
        assert records, topic
        dead += records
    for record in dead:
        where = f"{record.topic}:{record.partition}:{record.offset}"
        places[f"{where} value"] = record.value or b""
        places[f"{where} key"] = record.key or b""
        places[f"{where} headers"] = b"\n".join(k.encode() + b"=" + v for k, v in record.headers)
    assert len(places["gateway log"]) > 0

    places["/_sandbox/stats"] = stats

    planted = dict(places, planted=b"log line " + secrets[next(iter(tokens))].encode() + b" end")
    assert leaks(planted, secrets) == [f"planted: {next(iter(tokens))}"]  # the scan does find a secret
    assert leaks(places, secrets) == []


async def test_sandbox_stats_name_no_appkey(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
) -> None:
    """After one served call the sandbox's /_sandbox/stats holds neither appkey of the gateway."""
    async with (
        gateway(),
        HubClient.connect(
            services.kafka_bootstrap,
            caller="secret-scan",
            request_topic=topics.requests,
            reply_topic=topics.responses,
        ) as client,
    ):
        answer = await client.submit("KIS", "FHKST01010100", PRICE, timeout=30)
    assert answer.status is Status.OK
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox_url}/_sandbox/stats") as resp:
        stats = await resp.read()
    assert leaks({"/_sandbox/stats": stats}, {"KIS appkey": appkey(gateway_settings)}) == []
