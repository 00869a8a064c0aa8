"""``ensure_topics`` on a real broker: what Kafka refuses to create is reported so, not as created."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from services.topics import TopicSpec, ensure_topics
from tests.conftest import Services


async def test_a_name_kafka_refuses_is_reported_refused(services: Services, unique: str) -> None:
    """Kafka answers an illegal name with an error for that topic alone: the report names it with Kafka's
    reason, the legal one is created, and a second run creates nothing and refuses it again."""
    good, bad = f"test.{unique}.good", f"test {unique} bad!"
    specs = [TopicSpec(good, 1, 1, {}), TopicSpec(bad, 1, 1, {})]
    first = await ensure_topics(services.kafka_bootstrap, specs)
    assert first.created == [good]
    assert [line.split(":")[:2] for line in first.refused] == [[bad, " InvalidTopicError"]]
    second = await ensure_topics(services.kafka_bootstrap, specs)
    assert (second.created, second.unchanged, len(second.refused)) == ([], [good], 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        assert good in await admin.list_topics() and bad not in await admin.list_topics()
    finally:
        await admin.close()
