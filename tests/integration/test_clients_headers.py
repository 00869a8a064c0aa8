"""Spring's header conventions through a real gateway with a raw Kafka client: the reply address from the
headers, the correlation bytes back unchanged, and a body and headers that disagree (issue 13)."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from hubclient.headers import (
    CORRELATION_ID,
    DLQ_REASON,
    REPLY_PARTITION,
    REPLY_TOPIC,
    encode_partition,
    header_value,
)
from hubclient.ids import new_request_id
from hubclient.models import ApiResponse, Status
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics
from tests.integration.test_round_trip import header_text, read_all
from tests.params import PRICE

pytestmark = pytest.mark.integration


def request_body(topics: Topics, **reply: object) -> dict[str, Any]:
    """A KIS price request with ``reply`` (reply_topic / reply_partition) as its only reply fields."""
    now_ms = int(time.time() * 1000)
    return {
        "request_id": new_request_id(),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "params": PRICE,
        "caller": "raw-client",
        "deadline_ms": now_ms + 30_000,
        "created_at_ms": now_ms,
        **reply,
    }


async def test_header_reply_address_and_conflict(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """A body without a reply address is answered ok on the headers' partition 2 with the 16 correlation
    bytes back; a body naming partition 1 against a header naming 3 is dead-lettered as
    reply_address_conflict and answered invalid on partition 1, its bytes back too."""
    served_id, conflict_id = os.urandom(16), os.urandom(16)
    served = request_body(topics)
    conflict = request_body(topics, reply_topic=topics.responses, reply_partition=1)
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        async with gateway():
            for value, correlation, partition in ((served, served_id, 2), (conflict, conflict_id, 3)):
                headers = [
                    (CORRELATION_ID, correlation),
                    (REPLY_TOPIC, topics.responses.encode()),
                    (REPLY_PARTITION, encode_partition(partition)),
                ]
                await producer.send_and_wait(
                    topics.requests, orjson.dumps(value), key=b"KIS", headers=headers
                )
            answers = await read_all(services, topics.responses, 2, timeout_s=30)
            (dead,) = await read_all(services, topics.dlq, 1, timeout_s=20)
    finally:
        await producer.stop()
    by_id = {ApiResponse.from_json(r.value).request_id: r for r in answers}
    ok, invalid = by_id[served["request_id"]], by_id[conflict["request_id"]]
    assert ApiResponse.from_json(ok.value).status is Status.OK
    assert (ok.partition, header_value(ok.headers, CORRELATION_ID)) == (2, served_id)
    answer = ApiResponse.from_json(invalid.value)
    assert (answer.status, answer.reason) == (Status.INVALID, "invalid_request")
    assert answer.message is not None and answer.message.startswith("reply_address_conflict:")
    assert (invalid.partition, header_value(invalid.headers, CORRELATION_ID)) == (1, conflict_id)
    assert header_text(dead, DLQ_REASON).startswith("reply_address_conflict:")
