"""Bad input lands in the dead-letter topic with its reason, is answered where possible, and stops nothing."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from hubclient.headers import (
    CORRELATION_ID,
    DLQ_OMITTED,
    DLQ_REASON,
    DLQ_SOURCE,
    REPLY_PARTITION,
    REPLY_TOPIC,
    header_value,
)
from hubclient.ids import new_request_id
from hubclient.models import ApiResponse, Status
from services.settings import GatewaySettings
from services.topics import TopicSpec, ensure_topics
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics
from tests.integration.test_round_trip import header_text, hub, read_all
from tests.params import PRICE


async def test_garbage_and_invalid_json(services: Services, topics: Topics, gateway: GatewayFactory) -> None:
    """Garbage and schema-invalid JSON go to the DLQ; the latter is answered invalid; later calls work."""
    invalid_id = new_request_id()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.requests, b"\x00\xff not json at all", key=b"KIS")
        bad = {
            "request_id": invalid_id,
            "provider": "NOBODY",
            "tr_id": "FHKST01010100",
            "caller": "t",
            "deadline_ms": 1,
            "created_at_ms": 1,
            "reply_topic": topics.responses,
            "reply_partition": 0,
        }
        await producer.send_and_wait(topics.requests, orjson.dumps(bad), key=b"KIS")
        # a non-JSON body whose reply address is only in the (Spring-style) headers
        header_id = new_request_id()
        await producer.send_and_wait(
            topics.requests,
            b"{truncated",
            key=b"KIS",
            headers=[
                (CORRELATION_ID, header_id.encode()),
                (REPLY_TOPIC, topics.responses.encode()),
                (REPLY_PARTITION, (1).to_bytes(4, "big")),
            ],
        )
    finally:
        await producer.stop()

    async with gateway(), hub(services, topics) as client:
        after = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
    assert after.status is Status.OK

    dead = await read_all(services, topics.dlq, 3)
    reasons = [header_text(r, DLQ_REASON) for r in dead]
    assert reasons[0].startswith("unparseable")
    assert reasons[1].startswith("schema") and "provider" in reasons[1]
    assert reasons[2].startswith("unparseable")
    assert dead[0].value == b"\x00\xff not json at all"  # kept byte for byte
    assert header_text(dead[0], DLQ_SOURCE).startswith(f"{topics.requests}:")

    answers = {
        ApiResponse.from_json(r.value).request_id: (r.partition, ApiResponse.from_json(r.value))
        for r in await read_all(services, topics.responses, 3)
    }
    assert answers[invalid_id][1].status is Status.INVALID
    assert answers[invalid_id][0] == 0
    assert answers[header_id][1].status is Status.INVALID
    assert answers[header_id][0] == 1


def price_request(**fields: object) -> bytes:
    """A raw, otherwise valid price request body with ``fields`` overridden."""
    body = {
        "request_id": new_request_id(),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "caller": "t",
        "params": PRICE,
        "deadline_ms": 2**41,
        "created_at_ms": 1,
        **fields,
    }
    return orjson.dumps(body)


async def produce(services: Services, topic: str, value: bytes) -> None:
    """Publish one raw value, keyed KIS, as any non-Python client could."""
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"KIS")
    finally:
        await producer.stop()


async def test_foreign_reply_topic_is_refused(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """A request asking for answers on a topic that is not a reply topic is dead-lettered, not obeyed."""
    await produce(services, topics.requests, price_request(reply_topic=topics.requests, reply_partition=0))
    async with gateway():
        (dead,) = await read_all(services, topics.dlq, 1, timeout_s=20)
    assert header_text(dead, DLQ_REASON).startswith("reply_topic_not_allowed")


async def test_unknown_reply_partition_is_dead_lettered(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """A reply partition that does not exist cannot block the partition: the request is dead-lettered."""
    await produce(services, topics.requests, price_request(reply_topic=topics.responses, reply_partition=99))
    async with gateway(), hub(services, topics) as client:
        after = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        (dead,) = await read_all(services, topics.dlq, 1, timeout_s=20)
    assert after.status is Status.OK
    assert header_text(dead, DLQ_REASON).startswith("reply_partition_unknown")


async def test_what_kafka_will_not_carry_ends_in_a_dead_letter_or_an_answer_all_the_same(
    services: Services, topics: Topics, gateway: GatewayFactory, gateway_settings: GatewaySettings
) -> None:
    """A record with no value, a dead letter past its topic's ``max.message.bytes`` and an answer past the
    reply topic's: none may stall the partition (each was retried forever, its offset never committed)."""
    small_dlq, small_replies = f"{topics.dlq}.small", f"{topics.responses}.small"
    await ensure_topics(
        services.kafka_bootstrap,
        [
            TopicSpec(small_dlq, 1, 1, {"max.message.bytes": "65536"}),
            TopicSpec(small_replies, 1, 1, {"max.message.bytes": "1500"}),
        ],
    )
    empty_id, big_id = new_request_id(), new_request_id()
    price = price_request(reply_topic=small_replies, reply_partition=0)
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        for request_id, value in ((empty_id, None), (big_id, b"x" * 100_000)):
            headers = [(CORRELATION_ID, request_id.encode()), (REPLY_TOPIC, topics.responses.encode())]
            headers.append((REPLY_PARTITION, (0).to_bytes(4, "big")))
            await producer.send_and_wait(topics.requests, value, key=b"KIS", headers=headers)
        await producer.send_and_wait(topics.requests, price, key=b"KIS")
    finally:
        await producer.stop()

    kafka = gateway_settings.kafka.model_copy(
        update={"dlq_topic": small_dlq, "extra_reply_topics": [small_replies]}
    )
    async with gateway(kafka=kafka), hub(services, topics) as client:
        after = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        empty, big = await read_all(services, small_dlq, 2, timeout_s=20)
        (too_large,) = await read_all(services, small_replies, 1, timeout_s=20)
    assert after.status is Status.OK
    assert (empty.key, empty.value) == (b"KIS", None)
    assert header_text(empty, DLQ_REASON).startswith("unparseable")
    assert big.value is None and int(header_value(big.headers, DLQ_OMITTED) or b"0") > 100_000
    assert header_text(big, DLQ_REASON).startswith("too_large")
    assert header_value(big.headers, CORRELATION_ID) is None  # the original headers are left out too
    answers = {
        ApiResponse.from_json(r.value).request_id: ApiResponse.from_json(r.value)
        for r in await read_all(services, topics.responses, 3)
    }
    assert answers[empty_id].status is Status.INVALID and answers[big_id].status is Status.INVALID
    answer = ApiResponse.from_json(too_large.value)
    assert (answer.status, answer.reason, answer.data, answer.attempts) == (
        Status.UPSTREAM_ERROR,
        "answer_too_large",
        None,
        1,
    )
