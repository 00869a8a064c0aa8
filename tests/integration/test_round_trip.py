"""The walking skeleton: hubclient → api.requests → gateway → sandbox → api.responses → hubclient."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hubclient import HubClient, HubTimeout, UnknownTrId, UpstreamError
from hubclient.headers import CORRELATION_ID, REPLY_PARTITION, REPLY_TOPIC, header_value
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, ApiResponse, Status
from services.settings import GatewaySettings
from services.topics import TopicSpec, ensure_topics, load_topics
from tests.conftest import REPO, Services
from tests.integration.conftest import GatewayFactory, Topics
from tests.params import PRICE


def hub(services: Services, topics: Topics, caller: str = "test-worker") -> HubClient:
    """A client on this test's topics."""
    return HubClient.connect(
        services.kafka_bootstrap, caller=caller, request_topic=topics.requests, reply_topic=topics.responses
    )


async def read_all(
    services: Services, topic: str, count: int, timeout_s: float = 15
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topic`` (all partitions), read from the beginning."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def header_text(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    """Header ``name`` of ``record`` as text; the test fails if the record does not carry it."""
    value = header_value(record.headers, name)
    assert value is not None, f"no {name} header on {record.topic}:{record.partition}:{record.offset}"
    return value.decode()


async def test_price_round_trip(services: Services, topics: Topics, gateway: GatewayFactory) -> None:
    """A KIS price request comes back ok with the broker's untouched body and the gateway's timing."""
    async with gateway(), hub(services, topics) as client:
        response = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
    assert response.status is Status.OK
    assert response.data["rt_cd"] == "0"
    assert response.data["output"]["stck_prpr"].isdigit()
    assert response.attempts == 1
    assert response.timing.total_ms > 0
    assert response.gateway.startswith("gw-")


async def test_gateway_started_before_its_request_topic(
    services: Services, topics: Topics, gateway: GatewayFactory, gateway_settings: GatewaySettings
) -> None:
    """A gateway whose request topic does not exist yet (started before ``apihub topics ensure``) is
    given its partitions within seconds of the topic's creation, not when its metadata expires (5 min)."""
    late = f"{topics.requests}.late"
    kafka = gateway_settings.kafka.model_copy(update={"request_topic": late})
    async with gateway(kafka=kafka) as app:
        await asyncio.sleep(1)  # the group is joined with no partition: the topic is unknown
        (declared,) = [s for s in load_topics() if s.name == "api.requests"]
        await ensure_topics(services.kafka_bootstrap, [TopicSpec(late, 2, 1, declared.config)])
        client = HubClient.connect(
            services.kafka_bootstrap, caller="test-worker", request_topic=late, reply_topic=topics.responses
        )
        async with client:
            response = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        assert app.consumer.assignment == {TopicPartition(late, 0), TopicPartition(late, 1)}
    assert response.status is Status.OK


async def committed_total(services: Services, group_id: str, topic: str) -> int:
    """Sum over partitions of the group's committed positions on ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def test_headers_and_commit(services: Services, topics: Topics, gateway: GatewayFactory) -> None:
    """Both audit topics carry the Spring-compatible headers and the offset is committed after the answer."""
    async with gateway(), hub(services, topics) as client:
        response = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        async with asyncio.timeout(10):
            while await committed_total(services, topics.group_id, topics.requests) < 1:
                await asyncio.sleep(0.1)
    (req,) = await read_all(services, topics.requests, 1)
    (resp,) = await read_all(services, topics.responses, 1)
    assert header_value(req.headers, CORRELATION_ID) == response.request_id.encode()
    assert header_value(resp.headers, CORRELATION_ID) == response.request_id.encode()
    assert header_value(req.headers, REPLY_TOPIC) == topics.responses.encode()
    partition = header_value(req.headers, REPLY_PARTITION)
    assert partition is not None and len(partition) == 4
    assert int.from_bytes(partition, "big") == resp.partition
    assert ApiResponse.from_json(resp.value).request_id == response.request_id
    assert req.key == b"KIS"
    assert await committed_total(services, topics.group_id, topics.requests) == 1


async def test_upstream_error_is_typed(services: Services, topics: Topics, gateway: GatewayFactory) -> None:
    """A broker error comes back as upstream_error and execute() raises UpstreamError with its code."""
    async with gateway(), hub(services, topics) as client:
        with pytest.raises(UpstreamError) as info:
            # the key is there (so the client sends it) but blank, which the broker refuses
            await client.execute("KIS", "FHKST01010100", {**PRICE, "FID_INPUT_ISCD": ""}, timeout=20)
    response = info.value.response
    assert response is not None and response.status is Status.UPSTREAM_ERROR
    assert response.reason == "business_error" and response.attempts == 1
    assert info.value.provider_code == response.provider_code and response.provider_code
    assert response.data["rt_cd"] != "0"  # the broker's body, untouched


async def test_unknown_tr_id_never_reaches_kafka(services: Services, topics: Topics) -> None:
    """An unknown tr_id is refused by the client before anything is produced."""
    async with hub(services, topics) as client:
        with pytest.raises(UnknownTrId):
            await client.execute("KIS", "NOPE0000", {}, timeout=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=services.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.requests, p) for p in range(6)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 0


async def test_timeout_without_gateway(services: Services, topics: Topics) -> None:
    """With no gateway running the caller gets HubTimeout at its own timeout, and nothing stays pending."""
    async with hub(services, topics) as client:
        with pytest.raises(HubTimeout):
            await client.execute("KIS", "FHKST01010100", PRICE, timeout=0.5)
        assert client.pending == 0


async def test_late_and_foreign_replies_are_counted(services: Services, topics: Topics) -> None:
    """A reply nobody waits for is ignored and counted, as late (after a timeout) or foreign."""
    async with hub(services, topics) as client:
        with pytest.raises(HubTimeout):
            await client.execute("KIS", "FHKST01010100", PRICE, timeout=0.3)
        (sent,) = await read_all(services, topics.requests, 1)
        late_id = ApiRequest.from_json(sent.value).request_id
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        await producer.start()
        try:
            for request_id in (late_id, new_request_id()):
                answer = ApiResponse(request_id=request_id, status=Status.REJECTED, reason="test")
                await producer.send_and_wait(
                    topics.responses, answer.to_json(), partition=client._transport.reply_partition
                )
        finally:
            await producer.stop()
        async with asyncio.timeout(10):
            while client.late_replies + client.foreign_replies < 2:
                await asyncio.sleep(0.05)
    assert (client.late_replies, client.foreign_replies) == (1, 1)


async def test_console_consumer_reads_the_audit_log(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """Kafka's own console consumer (ops/bin wrapper) prints both audit topics with headers and ids."""
    async with gateway(), hub(services, topics) as client:
        response = await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
    tool = REPO / "ops" / "bin" / "kafka-console-consumer"
    for topic in (topics.requests, topics.responses):
        proc = await asyncio.create_subprocess_exec(
            str(tool),
            "--bootstrap-server",
            services.kafka_bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "30000",
            "--property",
            "print.headers=true",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        text = out.decode()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert f"kafka_correlationId:{response.request_id}" in text
        assert f'"request_id":"{response.request_id}"' in text


async def test_health_readiness_and_metrics(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """/healthz answers, /readyz reports Kafka, Redis and tokens, /metrics carries the documented series."""
    from tests.integration.conftest import free_port

    port = free_port()
    async with gateway() as app, hub(services, topics) as client:
        await app.start_http("127.0.0.1", port)
        await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with asyncio.timeout(15):  # the group join completes a moment after start
                while True:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        ready = await resp.json()
                    if resp.status == 200:
                        break
                    await asyncio.sleep(0.2)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
    assert (
        ready["redis"] is True and ready["kafka_consuming"] is True and ready["tokens_valid"]["KIS"] is True
    )
    for series in (
        'apihub_requests_total{caller="test-worker",provider="KIS",status="ok",tr_id="FHKST01010100"}',
        "apihub_upstream_calls_total",
        "apihub_upstream_latency_seconds_bucket",
        "apihub_queue_wait_seconds_bucket",
        "apihub_token_refreshes_total",
        "apihub_consumer_lag",
        "apihub_inflight_requests",
        "apihub_assigned_partitions",
    ):
        assert series in metrics, series
