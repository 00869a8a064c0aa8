"""The gateway process around the core (``GatewayApp``, ``Publisher``) on an in-memory Kafka and gateway:
every record ends in one answer or one dead letter; health, readiness and metrics over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from hubclient.headers import (
    CORRELATION_ID,
    DLQ_OMITTED,
    DLQ_REASON,
    DLQ_SOURCE,
    REPLY_PARTITION,
    REPLY_TOPIC,
    encode_partition,
    request_headers,
)
from hubclient.models import ApiRequest, ApiResponse, Priority, Provider, Status
from services import credentials_cli
from services.gateway import app as app_module
from services.gateway import metrics
from services.gateway import publisher as publisher_module
from services.gateway.app import GatewayApp
from services.gateway.publisher import Publisher
from services.gateway.testing import Rig, build_gateway, kis_envelope
from services.settings import (
    CredentialSettings,
    GatewaySettings,
    KafkaSettings,
    KisSettings,
    ProviderSettings,
    RedisSettings,
)
from tests.unit.kafka_fakes import FakeCluster, FakeProducer, factory
from tests.unit.test_gateway_core import ORDER

REQUESTS, RESPONSES, DLQ = "api.requests", "api.responses", "api.requests.dlq"


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Harness:
    """A ``GatewayApp`` whose producer writes to ``cluster`` and whose core is an in-memory gateway."""

    app: GatewayApp
    cluster: FakeCluster
    rig: Rig
    producer: FakeProducer

    async def serve(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one record while moving the in-memory gateway's clock."""
        task = asyncio.create_task(self.app.handle_record(record))
        async with asyncio.timeout(10):
            while not task.done():
                await self.rig.clock.advance(0.01)
        await task

    def answers(self) -> list[tuple[ApiResponse, dict[str, bytes]]]:
        """Responses on the reply topic with their headers."""
        return [
            (ApiResponse.model_validate_json(r.value or b""), dict(r.headers))
            for r in self.cluster.records(RESPONSES)
        ]


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """A started publisher on a fake cluster (``api.responses`` has two partitions); Redis is unreachable."""
    cluster = FakeCluster({REQUESTS: 1, RESPONSES: 2, DLQ: 1, "apihub.events": 1})
    made: list[FakeProducer] = []
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", factory(cluster, FakeProducer, made))
    settings = GatewaySettings(
        instance_id="gw-unit",
        redis=RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0"),
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        max_request_bytes=2_000,
    )
    app = GatewayApp(settings)
    rig = build_gateway()
    app.gateway = rig.gateway
    await app.publisher.start()
    [producer] = made
    assert producer.config["enable_idempotence"] is True
    try:
        yield Harness(app, cluster, rig, producer)
    finally:
        await app.stop()
    assert producer.stopped


def price_request(partition: int = 1, reply_topic: str = RESPONSES) -> ApiRequest:
    """A KIS price request with a deadline far on the in-memory gateway's clock."""
    now_ms = 1_790_000_000_000
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=Provider.KIS,
        tr_id="FHKST01010100",
        params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        caller="unit",
        priority=Priority.INTERACTIVE,
        deadline_ms=now_ms + 30_000,
        created_at_ms=now_ms,
        reply_topic=reply_topic,
        reply_partition=partition,
    )


def record_of(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], offset: int = 7
) -> ConsumerRecord:
    """A record as read from ``api.requests``."""
    return ConsumerRecord(REQUESTS, 0, offset, 0, 0, None, value, None, 0, len(value or b""), headers)


async def test_a_valid_request_is_answered_on_its_reply_partition(harness: Harness) -> None:
    """The answer goes to the request's own partition, keyed by request id, the request's headers echoed."""
    request = price_request(partition=1)
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    [(response, headers)] = harness.answers()
    assert response.request_id == request.request_id and response.status is Status.OK
    [record] = harness.cluster.records(RESPONSES)
    assert record.partition == 1 and record.key == request.request_id.encode()
    assert headers[CORRELATION_ID] == request.request_id.encode()
    assert headers[REPLY_PARTITION] == encode_partition(1)
    assert harness.cluster.records(DLQ) == []


async def test_a_correlation_id_too_long_to_echo_is_answered_under_the_request_id(harness: Harness) -> None:
    """A ``kafka_correlationId`` of a megabyte is not echoed (an answer carrying it could never be
    published: the request went unanswered, its offset held): the answer carries the request id there,
    and a reply-address conflict names the topics in 80 characters at most."""
    request = price_request(partition=1)
    headers = [(k, v) for k, v in request_headers(request) if k != CORRELATION_ID]
    await harness.serve(record_of(request.to_json(), [*headers, (CORRELATION_ID, b"c" * 1_000_000)]))
    [(response, echoed)] = harness.answers()
    assert response.status is Status.OK and echoed[CORRELATION_ID] == request.request_id.encode()
    conflicting = [(k, v) for k, v in headers if k != REPLY_TOPIC] + [(REPLY_TOPIC, b"t" * 5000)]
    await harness.serve(record_of(request.to_json(), conflicting, offset=8))
    invalid = harness.answers()[-1][0]
    assert invalid.status is Status.INVALID and len(invalid.message or "") < 400


async def test_free_text_in_requests_makes_no_new_metric_series(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers to requests with TR ids the catalog lacks, from callers past the labels' budget, are
    counted under ``unknown`` and ``other``: a caller cannot grow the gateway's series without bound."""
    monkeypatch.setattr(metrics, "_CALLERS", {"unit"})
    monkeypatch.setattr(metrics, "MAX_CALLER_LABELS", 1)
    labels = {"provider": "KIS", "tr_id": "unknown", "caller": "other", "status": "invalid"}
    before = REGISTRY.get_sample_value("apihub_requests_total", labels) or 0.0
    for i in range(5):
        request = price_request().model_copy(update={"tr_id": f"RANDOM{i}", "caller": f"caller-{i}"})
        await harness.serve(record_of(request.to_json(), request_headers(request)))
    assert {a.status for a, _ in harness.answers()} == {Status.INVALID}
    assert REGISTRY.get_sample_value("apihub_requests_total", labels) == before + 5
    assert REGISTRY.get_sample_value("apihub_requests_total", {**labels, "tr_id": "RANDOM0"}) is None


async def test_under_overload_a_refusal_by_pace_is_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Demand past the pace: each refusal is one ``ratelimit.rejected`` line (info and up), not that and a
    ``request.answered`` line at info besides, which doubled the log's lines per request exactly while the
    gateway was overloaded; the answer's line is debug, as an ok answer's is."""
    requests = [
        price_request(partition=0).model_copy(
            update={
                "params": {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": f"{i:06d}"},
                "deadline_ms": 1_790_000_001_000,
            }
        )
        for i in range(60)
    ]
    with caplog.at_level(logging.INFO, logger="services.gateway"):
        records = [record_of(r.to_json(), request_headers(r), offset=i) for i, r in enumerate(requests)]
        tasks = [asyncio.create_task(harness.app.handle_record(record)) for record in records]
        async with asyncio.timeout(10):
            while not all(t.done() for t in tasks):
                await harness.rig.clock.advance(0.01)
    refused = [a for a, _ in harness.answers() if a.reason == "deadline_unreachable"]
    assert len(refused) > 20 and len(harness.answers()) == 60
    lines = Counter(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert lines["ratelimit.rejected"] == len(refused)
    assert lines["request.answered"] == 0


async def test_unparseable_input_is_dead_lettered_and_answered_invalid_where_possible(
    harness: Harness,
) -> None:
    """Garbage with a usable reply address in its headers: one dead letter and one ``invalid`` answer."""
    request_id = str(uuid.uuid4())
    headers = [
        (CORRELATION_ID, request_id.encode()),
        (REPLY_TOPIC, RESPONSES.encode()),
        (REPLY_PARTITION, encode_partition(0)),
        (DLQ_REASON, b"forged"),
    ]
    await harness.serve(record_of(b"{not json", headers, offset=42))
    [letter] = harness.cluster.records(DLQ)
    meta = dict(letter.headers)
    assert letter.value == b"{not json"
    assert meta[DLQ_REASON].startswith(b"unparseable") and meta[DLQ_SOURCE] == b"api.requests:0:42"
    assert [k for k, _ in letter.headers].count(DLQ_REASON) == 1  # a forged reason header is replaced
    [(response, _)] = harness.answers()
    assert (response.request_id, response.status, response.reason) == (
        request_id,
        Status.INVALID,
        "invalid_request",
    )


async def test_garbage_without_a_reply_address_is_only_dead_lettered(harness: Harness) -> None:
    """Nothing to answer to: the dead letter is all."""
    await harness.serve(record_of(b"\x00\x01", []))
    assert len(harness.cluster.records(DLQ)) == 1 and harness.answers() == []


async def test_an_oversized_record_is_refused_before_parsing(harness: Harness) -> None:
    """Beyond ``max_request_bytes`` the record is dead-lettered ``too_large`` and answered invalid."""
    request = price_request(partition=0)
    await harness.serve(record_of(b"x" * 3_000, request_headers(request)))
    [letter] = harness.cluster.records(DLQ)
    assert dict(letter.headers)[DLQ_REASON].startswith(b"too_large")
    [(response, _)] = harness.answers()
    assert response.status is Status.INVALID and response.request_id == request.request_id


async def test_a_reply_partition_that_does_not_exist_is_dead_lettered(harness: Harness) -> None:
    """A valid request naming a missing reply partition cannot be answered: it is dead-lettered with why."""
    request = price_request(partition=9)
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    [letter] = harness.cluster.records(DLQ)
    assert dict(letter.headers)[DLQ_REASON] == b"reply_partition_unknown: api.responses has no partition 9"
    assert harness.answers() == []
    assert harness.rig.dispatcher.calls("/quotations/") == []  # never reached the broker


@pytest.mark.parametrize("error", [UnknownTopicOrPartitionError, TopicAuthorizationFailedError])
async def test_an_allowed_reply_topic_kafka_does_not_show_is_dead_lettered(
    harness: Harness, error: type[KafkaError]
) -> None:
    """An allowed reply topic whose partitions Kafka will not tell (not created, deleted, no DESCRIBE for
    the gateway) is dead-lettered like a missing partition. The producer's KafkaError used to escape the
    handler, which the consumer takes for a publish cut by a stop: the request went unanswered and its
    offset stayed open, holding back every later commit of the partition until a rebalance."""
    harness.app._reply_topics = frozenset({RESPONSES, "api.responses.collectors"})
    harness.producer.fail_next("partitions_for", error())
    request = price_request(partition=0, reply_topic="api.responses.collectors")
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    [letter] = harness.cluster.records(DLQ)
    assert dict(letter.headers)[DLQ_REASON].startswith(b"reply_partition_unknown: api.responses.collectors")
    assert harness.answers() == []
    assert harness.rig.dispatcher.calls("/quotations/") == []


async def test_an_invalid_answer_to_a_missing_partition_is_not_attempted(harness: Harness) -> None:
    """Bad input whose reply partition does not exist is dead-lettered and nothing else."""
    headers = [
        (CORRELATION_ID, str(uuid.uuid4()).encode()),
        (REPLY_TOPIC, RESPONSES.encode()),
        (REPLY_PARTITION, encode_partition(5)),
    ]
    await harness.serve(record_of(b"[]", headers))
    assert len(harness.cluster.records(DLQ)) == 1 and harness.answers() == []


async def test_a_bug_in_the_core_still_ends_in_one_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception from the core is answered ``rejected`` / ``internal_error`` naming the exception type."""

    async def broken(request: ApiRequest, position: object = None) -> ApiResponse:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(harness.rig.gateway, "handle", broken)
    request = price_request()
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    [(response, _)] = harness.answers()
    assert (response.status, response.reason, response.message) == (
        Status.REJECTED,
        "internal_error",
        "ZeroDivisionError",
    )


async def test_a_failed_publish_is_retried_until_it_lands(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka refusing the answer twice delays it; it is published once, never dropped."""
    monkeypatch.setattr(app_module, "PUBLISH_RETRY_S", 0.01)
    harness.producer.fail_next("send", KafkaConnectionError("leader moved"), times=2)
    request = price_request()
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    assert len(harness.answers()) == 1


async def test_while_stopping_a_failed_publish_is_raised(harness: Harness) -> None:
    """Once stopping, a publish failure propagates so the offset stays uncommitted."""
    harness.app._stopping = True
    harness.producer.fail_next("send", KafkaConnectionError("gone"))
    request = price_request()
    with pytest.raises(KafkaConnectionError):
        await harness.serve(record_of(request.to_json(), request_headers(request)))


async def test_health_readiness_and_metrics_over_http(harness: Harness) -> None:
    """``/healthz`` answers, ``/readyz`` says 503 with why (no Redis, not consuming), ``/metrics`` serves."""
    await harness.app.start_http("127.0.0.1", 0)
    assert harness.app._http is not None
    host, port = harness.app._http.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok", "instance_id": "gw-unit"}
        async with session.get(f"http://{host}:{port}/readyz") as resp:
            assert resp.status == 503
            body = orjson.loads(await resp.read())
            assert body["ready"] is False and body["redis"] is False and body["kafka_consuming"] is False
            assert body["assigned_partitions"] == 0 and "KIS" in body["tokens_valid"]
        async with session.get(f"http://{host}:{port}/metrics") as resp:
            assert resp.status == 200
            assert "text/plain" in resp.headers["Content-Type"]
    await harness.app.stop_http()
    assert harness.app._http is None


async def test_start_needs_redis(harness: Harness) -> None:
    """A gateway whose Redis does not answer refuses to start."""
    with pytest.raises((RedisConnectionError, OSError)):
        await harness.app.start()


async def test_a_start_that_fails_closes_what_it_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis down at start: the error goes up, and the producer built for the answers is closed, not left to
    warn "Unclosed AIOKafkaProducer" in the log as the process ends."""
    made: list[FakeProducer] = []
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", factory(FakeCluster(), FakeProducer, made))
    settings = GatewaySettings(
        redis=RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0"),
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
    )
    app = GatewayApp(settings)
    with pytest.raises((RedisConnectionError, OSError)):
        await app.start()
    [producer] = made
    assert producer.stopped and not producer.started


async def test_publisher_refuses_use_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every publishing call before ``start`` is a clear error, not an AttributeError."""
    made: list[FakeProducer] = []
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", factory(FakeCluster(), FakeProducer, made))
    publisher = Publisher("127.0.0.1:1", dlq_topic=DLQ, client_id="unit")
    response = ApiResponse(request_id=str(uuid.uuid4()), status=Status.OK, gateway="x")
    with pytest.raises(RuntimeError, match="start"):
        await publisher.can_reply_to(RESPONSES, 0)
    with pytest.raises(RuntimeError, match="start"):
        await publisher.respond(response, reply_topic=RESPONSES, reply_partition=0, request=None)
    with pytest.raises(RuntimeError, match="start"):
        await publisher.event("apihub.events", b"k", b"v")
    with pytest.raises(RuntimeError, match="start"):
        await publisher.dead_letter(None, b"v", [], reason="r", source="s")
    await publisher.stop()  # stopping what never started is harmless
    assert not made[0].started


async def test_publisher_keeps_reasons_short_and_forwards_events(harness: Harness) -> None:
    """A dead-letter reason is cut at 1000 bytes, between characters (the header stays UTF-8 text); an
    operational event goes to its topic as given."""
    publisher = harness.app.publisher
    await publisher.dead_letter(None, b"", [("a", b"1")], reason="schema: " + "x" * 5000, source="t:0:1")
    [letter] = harness.cluster.records(DLQ)
    meta = dict(letter.headers)
    assert len(meta[DLQ_REASON]) == 1000 and meta["a"] == b"1"
    await publisher.dead_letter(None, b"", [], reason="schema: " + "한" * 500, source="t:0:2")
    cut = dict(harness.cluster.records(DLQ)[1].headers)[DLQ_REASON]
    assert cut.decode() == "schema: " + "한" * 330 and len(cut) == 998  # whole characters only: UTF-8
    await publisher.event("apihub.events", b"key", b'{"event":"x"}')
    [event] = harness.cluster.records("apihub.events")
    assert (event.key, event.value) == (b"key", b'{"event":"x"}')


def test_a_credentials_file_is_read_once_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The token store's appkeys and the routed members come from one read: the file cannot change between."""
    pool_file = tmp_path / "kis.json"
    pool_file.write_text(
        orjson.dumps([{"name": f"m{i}", "appkey": f"key-{i}", "secret": "s"} for i in (1, 2)]).decode()
    )
    reads: list[str] = []
    read = ProviderSettings._read_credentials_file

    def counted(self: ProviderSettings, path: str) -> list[CredentialSettings]:
        reads.append(path)
        return read(self, path)

    monkeypatch.setattr(ProviderSettings, "_read_credentials_file", counted)
    settings = GatewaySettings(
        redis=RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0"),
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        kis=KisSettings(credentials_file=str(pool_file)),
    )
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", factory(FakeCluster({}), FakeProducer, []))
    app = GatewayApp(settings)
    assert sorted(app.gateway.members) == ["KIS/m1", "KIS/m2", "KIWOOM"]
    assert reads == [str(pool_file)]
    table = credentials_cli.rows(pool := credentials_cli.members(settings))
    assert [r.domain for r in table if r.provider == "KIS"] == ["KIS/m1", "KIS/m2"] and len(pool) == 3
    assert reads == [str(pool_file)] * 2  # one read for the gateway, one for the command


async def test_a_record_with_no_value_is_dead_lettered_under_its_key_and_answered(harness: Harness) -> None:
    """A null value (a tombstone) is unparseable: its dead letter keeps the key, and the headers' address
    gets an ``invalid`` answer; with neither key nor value the dead letter is keyed by its source."""
    request_id = str(uuid.uuid4())
    headers = [(CORRELATION_ID, request_id.encode()), (REPLY_TOPIC, RESPONSES.encode())]
    headers.append((REPLY_PARTITION, encode_partition(1)))
    keyed = ConsumerRecord(REQUESTS, 0, 46, 0, 0, b"KIS", None, None, 3, 0, headers)
    await harness.serve(keyed)
    await harness.serve(record_of(None, [], offset=47))
    first, second = harness.cluster.records(DLQ)
    assert (first.key, first.value, second.key, second.value) == (b"KIS", None, b"api.requests:0:47", None)
    assert dict(first.headers)[DLQ_REASON].startswith(b"unparseable")
    [(response, _)] = harness.answers()
    assert (response.request_id, response.status) == (request_id, Status.INVALID)


@pytest.mark.parametrize("where", ["body", "correlation"])
async def test_a_request_id_with_a_trailing_line_break_is_no_request_id(harness: Harness, where: str) -> None:
    """``"<uuid>\\n"`` fails the schema's request_id pattern (and the model's): the body's (or the
    correlation header's) text is no request id, so a Spring client (16 random correlation bytes) gets
    its ``invalid`` answer under the id derived from the record's place, with its bytes back. It was taken
    for an id, and building the answer under it failed: dead letter only, and the client waited in vain."""
    spring = os.urandom(16)
    fields = orjson.loads(price_request(partition=1).to_json())
    if where == "body":
        fields["request_id"] += "\n"
        correlation = spring
    else:
        del fields["request_id"]
        correlation = (str(uuid.uuid4()) + "\n").encode()
    await harness.serve(record_of(orjson.dumps(fields), [(CORRELATION_ID, correlation)], offset=48))
    [letter] = harness.cluster.records(DLQ)
    assert dict(letter.headers)[DLQ_REASON].startswith(b"schema: request_id")
    [(response, headers)] = harness.answers()
    assert (response.status, response.reason) == (Status.INVALID, "invalid_request")
    assert response.request_id == str(uuid.uuid5(uuid.NAMESPACE_URL, "kafka:api.requests:0:48"))
    assert headers[CORRELATION_ID] == correlation


async def test_a_dead_letter_too_large_for_kafka_keeps_why_and_where_without_the_value(
    harness: Harness,
) -> None:
    """The copy would never land (value and headers past the producer's limit): it goes without them (a
    header Kafka carries as null counts as empty)."""
    request = price_request(partition=0)
    value = b"x" * 1_048_000
    headers = [*request_headers(request), ("big", b"y" * 600), ("null", None)]
    await harness.serve(record_of(value, headers, offset=9))
    [letter] = harness.cluster.records(DLQ)
    meta = dict(letter.headers)
    assert letter.value is None and letter.key == b"api.requests:0:9"
    assert meta[DLQ_REASON].startswith(b"too_large") and meta[DLQ_SOURCE] == b"api.requests:0:9"
    assert int(meta[DLQ_OMITTED]) > 1_048_576 - 1_000 and CORRELATION_ID not in meta
    [(response, _)] = harness.answers()
    assert response.status is Status.INVALID and response.request_id == request.request_id


@pytest.mark.parametrize(
    ("tr_id", "params", "status"),
    [
        ("FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}, Status.UPSTREAM_ERROR),
        ("TTTC0012U", ORDER, Status.UNKNOWN_OUTCOME),
    ],
)
async def test_an_answer_too_large_for_kafka_is_answered_without_the_body(
    harness: Harness, tr_id: str, params: dict[str, str], status: Status
) -> None:
    """A broker body Kafka will not carry: the caller still gets one answer, ``answer_too_large``; an order's
    is ``unknown_outcome`` (its caller cannot see what the broker said, so must reconcile, not resend)."""
    harness.rig.broker.then(kis_envelope(output={"blob": "z" * 1_100_000}))
    request = price_request(partition=1).model_copy(update={"tr_id": tr_id, "params": params})
    await harness.serve(record_of(request.to_json(), request_headers(request)))
    [(response, headers)] = harness.answers()
    assert (response.status, response.reason, response.data) == (status, "answer_too_large", None)
    assert response.attempts == 1 and "larger than api.responses accepts" in (response.message or "")
    assert headers[CORRELATION_ID] == request.request_id.encode()
