"""``KafkaTransport`` on an in-memory Kafka: the reply partition it claims, what it sends and hears."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAuthorizationFailedError

from hubclient import transport as transport_module
from hubclient.errors import HubError, HubNotStarted, HubUnavailable
from hubclient.headers import CALLER, CORRELATION_ID, REPLY_PARTITION, decode_partition
from hubclient.models import ApiRequest, Priority, Provider
from hubclient.transport import KafkaTransport
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, factory


class Made:
    """The fake clients a transport built."""

    def __init__(self) -> None:
        self.producers: list[FakeProducer] = []
        self.consumers: list[FakeConsumer] = []


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCluster, Made]:
    """A cluster with ``api.requests`` (2 partitions) and ``api.responses`` (3), wired into the transport."""
    fake = FakeCluster({"api.requests": 2, "api.responses": 3})
    made = Made()
    monkeypatch.setattr(transport_module, "AIOKafkaProducer", factory(fake, FakeProducer, made.producers))
    monkeypatch.setattr(transport_module, "AIOKafkaConsumer", factory(fake, FakeConsumer, made.consumers))
    return fake, made


def a_request(reply_partition: int) -> ApiRequest:
    """A KIS price request."""
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=Provider.KIS,
        tr_id="FHKST01010100",
        params={"FID_INPUT_ISCD": "005930"},
        caller="unit",
        priority=Priority.NORMAL,
        deadline_ms=2_000_000_000_000,
        created_at_ms=1_000,
        reply_topic="api.responses",
        reply_partition=reply_partition,
    )


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


async def test_round_trip_through_the_claimed_partition(cluster: tuple[FakeCluster, Made]) -> None:
    """Requests go out keyed by limit domain with headers; replies on the claimed partition come back only
    from after start (an older reply on it is not delivered)."""
    fake, made = cluster
    fake.append("api.responses", b"stale", partition=2)
    transport = KafkaTransport("kafka:9092", reply_partition=2, client_id="unit")
    with pytest.raises(HubNotStarted):
        _ = transport.reply_partition
    heard: list[bytes] = []
    await transport.start(heard.append)
    assert transport.reply_topic == "api.responses" and transport.reply_partition == 2
    request = a_request(transport.reply_partition)
    await transport.send(request)
    [sent] = fake.records("api.requests")
    assert sent.key == b"KIS" and sent.value == request.to_json()
    headers = dict(sent.headers)
    assert headers[CORRELATION_ID] == request.request_id.encode() and headers[CALLER] == b"unit"
    assert decode_partition(headers[REPLY_PARTITION]) == 2
    fake.append("api.responses", b"other partition", partition=0)
    fake.append("api.responses", None, partition=2)  # a tombstone carries nothing to hand back
    fake.append("api.responses", b"mine", partition=2)
    await until(lambda: heard == [b"mine"])
    await transport.stop()
    await transport.stop()  # twice is fine
    assert all(c.stopped for c in made.consumers) and all(p.stopped for p in made.producers)
    assert made.consumers[0].config["group_id"] is None


async def test_a_random_partition_is_claimed_when_none_is_wanted(cluster: tuple[FakeCluster, Made]) -> None:
    """Without a wanted partition, one of the topic's partitions is picked."""
    transport = KafkaTransport("kafka:9092")
    await transport.start(lambda value: None)
    try:
        assert transport.reply_partition in {0, 1, 2}
    finally:
        await transport.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reply_topic": "nowhere"}, "does not exist"),
        ({"reply_partition": 7}, "has no partition 7"),
    ],
)
async def test_a_reply_address_that_does_not_exist_is_refused(
    cluster: tuple[FakeCluster, Made], options: dict[str, Any], message: str
) -> None:
    """A missing reply topic or partition fails ``start`` and leaves nothing open."""
    _, made = cluster
    transport = KafkaTransport("kafka:9092", **options)
    with pytest.raises(HubError, match=message):
        await transport.start(lambda value: None)
    assert all(p.stopped for p in made.producers)


async def test_unreachable_kafka_is_a_hub_error(cluster: tuple[FakeCluster, Made]) -> None:
    """A Kafka error while connecting becomes ``HubError`` naming the address, with the cause kept."""
    transport = KafkaTransport("kafka:9092")
    original = FakeProducer.start

    async def refuse(self: FakeProducer) -> None:
        self.fail_next("start", KafkaConnectionError("connection refused"))
        await original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FakeProducer, "start", refuse)
        with pytest.raises(HubError, match="cannot reach Kafka at kafka:9092") as caught:
            await transport.start(lambda value: None)
    assert isinstance(caught.value.__cause__, KafkaConnectionError)
    with pytest.raises(HubNotStarted):
        await transport.send(a_request(0))


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (KafkaConnectionError("not leader"), True),
        (KafkaTimeoutError(), True),  # aiokafka calls it final; the next attempt may well get through
        (TopicAuthorizationFailedError(), False),
    ],
)
async def test_a_refused_send_is_a_hub_error(
    cluster: tuple[FakeCluster, Made], error: Exception, retriable: bool
) -> None:
    """A produce error is raised as ``HubUnavailable`` naming the request, retriable when Kafka's error
    passes by itself (a worker's retrier then tries again instead of dead-lettering the task)."""
    _, made = cluster
    transport = KafkaTransport("kafka:9092", reply_partition=0)
    await transport.start(lambda value: None)
    try:
        made.producers[0].fail_next("send", error)
        request = a_request(0)
        with pytest.raises(HubUnavailable, match=request.request_id) as raised:
            await transport.send(request)
        assert raised.value.retriable is retriable and isinstance(raised.value, HubError)
    finally:
        await transport.stop()


async def test_the_listener_survives_a_fetch_error(cluster: tuple[FakeCluster, Made]) -> None:
    """A failed reply fetch is logged and retried (after half a second); later replies still arrive."""
    fake, made = cluster
    transport = KafkaTransport("kafka:9092", reply_partition=1)
    heard: list[bytes] = []
    await transport.start(heard.append)
    try:
        made.consumers[0].fail_next("getmany", KafkaConnectionError("broker restarting"))
        fake.append("api.responses", b"after", partition=1)
        await until(lambda: heard == [b"after"])
    finally:
        await transport.stop()
