"""``apihub topics ensure`` creates what is missing, changes nothing the second time and reports drift."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.topics import ensure_topics, load_topics
from tests.conftest import Services


async def test_ensure_twice(services: Services, unique: str) -> None:
    """The first run creates every declared topic, the second finds them all unchanged."""
    specs = load_topics(rename={t.name: f"e{unique}.{t.name}" for t in load_topics()})
    first = await ensure_topics(services.kafka_bootstrap, specs)
    second = await ensure_topics(services.kafka_bootstrap, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    assert second.created == [] and second.drift == []
    assert sorted(second.unchanged) == sorted(s.name for s in specs)


async def test_drift_is_reported(services: Services, unique: str) -> None:
    """A topic created by hand with other partitions and policy is reported, not silently changed."""
    (spec,) = [
        s
        for s in load_topics(rename={"market.candles": f"d{unique}.candles"})
        if s.name == f"d{unique}.candles"
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(spec.name, 2, 1, topic_configs={"cleanup.policy": "delete"})])
        async with asyncio.timeout(10):  # metadata reaches the listing a moment after creation
            while spec.name not in await admin.list_topics():
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    report = await ensure_topics(services.kafka_bootstrap, [spec])
    assert report.created == []
    assert any("partitions 2, declared 6" in d for d in report.drift)
    assert any("cleanup.policy='delete', declared 'compact'" in d for d in report.drift)
