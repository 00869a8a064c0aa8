"""ratelimit.rejected reaches the events topic from a real gateway, with its documented fields."""

from __future__ import annotations

import asyncio

import orjson

from hubclient import RequestRejected
from services.settings import GatewaySettings
from services.topics import ensure_topics, load_topics
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, read_committed
from tests.integration.test_round_trip import hub
from tests.params import distinct_price


async def test_rejections_are_published_to_the_events_topic(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    unique: str,
) -> None:
    """Requests refused as deadline_unreachable each produce a ratelimit.rejected event on the events
    topic, keyed by provider, with the fields docs/LOGGING.md names and no secret."""
    events_topic = f"t{unique}.events"
    specs = [s for s in load_topics(rename={"apihub.events": events_topic}) if s.name == events_topic]
    await ensure_topics(services.kafka_bootstrap, specs)
    kafka = gateway_settings.kafka.model_copy(update={"events_topic": events_topic})
    async with gateway(kafka=kafka), hub(services, topics) as client:
        outcomes = await asyncio.gather(
            *(client.execute("KIS", "FHKST01010100", distinct_price(), timeout=1.0) for _ in range(60)),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, RequestRejected) and o.reason == "deadline_unreachable"]
    assert refused, "the load was meant to exceed what a 1 s deadline allows"
    records = await read_committed(services.kafka_bootstrap, events_topic, count=len(refused))
    events = [orjson.loads(r.value) for r in records]
    assert {r.key for r in records} == {b"KIS"}
    for event in events:
        assert event["event"] == "ratelimit.rejected" and event["reason"] == "deadline_unreachable"
        assert {
            "provider",
            "domain",
            "queue_depth",
            "estimated_wait_ms",
            "deadline_ms",
            "caller",
            "priority",
            "request_id",
            "instance_id",
            "ts_ms",
        } <= set(event)
    appkey = gateway_settings.kis.appkey
    assert appkey is not None and appkey.get_secret_value().encode() not in b"".join(r.value for r in records)
