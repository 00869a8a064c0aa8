"""Callers bound to their own request topic (``APIHUB_KAFKA__CALLER_TOPICS``): the settings, the intake of a
record on such a topic, the refusal of a bound name on the shared topic (``check_arrival``, and the whole
``GatewayApp`` on an in-memory Kafka), the consumer's topics and assignors, and ``apihub topics ensure``'s
specs. Plus the Kafka security helpers every client uses (``services.kafka_client``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from pydantic import SecretStr, ValidationError

from hubclient.headers import request_headers
from hubclient.models import ApiRequest, ApiResponse, Status
from services.gateway import consumer as consumer_module
from services.gateway import publisher as publisher_module
from services.gateway.app import GatewayApp
from services.gateway.consumer import RequestConsumer, assignors
from services.gateway.errors import NotPermitted
from services.gateway.intake import read_record
from services.gateway.permissions import CallerTopics, check_arrival
from services.gateway.quota import GroupQuota
from services.gateway.testing import build_gateway
from services.kafka_client import client_kwargs, security_env, with_security
from services.settings import ClientSettings, GatewaySettings, KafkaSettings, RedisSettings
from services.topics import caller_topic_specs, load_topics
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, factory
from tests.unit.test_gateway_app import DLQ, RESPONSES, Harness, closed_port, price_request

REQUESTS, TRADER_TOPIC = "api.requests", "api.requests.trader"
BINDING = {TRADER_TOPIC: "trader"}
REPLY_TOPICS = frozenset({RESPONSES})


def record_on(
    topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None, offset: int = 7
) -> ConsumerRecord[bytes, bytes]:
    """A record as read from ``topic``."""
    return ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), headers or [])


def body(**fields: object) -> dict[str, object]:
    """A well-formed KIS price request body (caller ``trader``), ``fields`` replaced (None: left out)."""
    base: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "params": {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        "caller": "trader",
        "deadline_ms": 4_000_000_000_000,
        "created_at_ms": 1,
        "reply_topic": RESPONSES,
        "reply_partition": 0,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def as_request(fields: dict[str, object]) -> ApiRequest:
    return ApiRequest.model_validate(fields)


# --- settings ---------------------------------------------------------------------------------------


def test_caller_topics_come_from_a_json_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIHUB_KAFKA__CALLER_TOPICS", orjson.dumps(BINDING).decode())
    kafka = ClientSettings().kafka
    assert kafka.caller_topics == BINDING
    assert kafka.request_topics == (REQUESTS, TRADER_TOPIC)
    assert KafkaSettings().request_topics == (REQUESTS,)


@pytest.mark.parametrize(
    ("topics", "complaint"),
    [
        ({REQUESTS: "trader"}, "already the gateway's"),
        ({"api.responses": "trader"}, "already the gateway's"),
        ({"api.requests.dlq": "trader"}, "already the gateway's"),
        ({"t1": "trader", "t2": "trader"}, "one request topic at most"),
        ({"t1": "no spaces"}, "not a caller name"),
    ],
)
def test_caller_topics_that_cannot_work_are_refused(topics: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        KafkaSettings(caller_topics=topics)


# --- intake -----------------------------------------------------------------------------------------


def test_a_request_on_its_callers_topic_is_read() -> None:
    intake = read_record(record_on(TRADER_TOPIC, orjson.dumps(body())), REPLY_TOPICS, caller_topics=BINDING)
    assert intake.request is not None and intake.request.caller == "trader" and intake.reason is None


def test_without_caller_the_topic_names_it_even_without_headers() -> None:
    value = orjson.dumps(body(caller=None))
    intake = read_record(record_on(TRADER_TOPIC, value), REPLY_TOPICS, caller_topics=BINDING)
    assert intake.request is not None and intake.request.caller == "trader"
    # On the shared topic the same body lacks a required field.
    shared = read_record(record_on(REQUESTS, value), REPLY_TOPICS, caller_topics=BINDING)
    assert shared.request is None and shared.reason is not None and shared.reason.startswith("schema: ")
    assert "caller" in shared.reason


def test_a_body_naming_another_caller_on_a_callers_topic_is_a_mismatch() -> None:
    fields = body(caller="demo")
    intake = read_record(record_on(TRADER_TOPIC, orjson.dumps(fields)), REPLY_TOPICS, caller_topics=BINDING)
    assert intake.request is None and intake.reason is not None
    assert intake.reason.startswith("caller_mismatch: ")
    assert "'trader'" in intake.reason and "'demo'" in intake.reason
    assert intake.reply is not None  # answered invalid at the body's address
    assert (intake.reply.request_id, intake.reply.topic) == (fields["request_id"], RESPONSES)


def test_a_mismatch_quotes_at_most_80_characters_of_the_claimed_name() -> None:
    value = orjson.dumps(body(caller="x" * 5_000))
    intake = read_record(record_on(TRADER_TOPIC, value), REPLY_TOPICS, caller_topics=BINDING)
    assert intake.reason is not None and intake.reason.startswith("caller_mismatch: ")
    assert len(intake.reason) < 250


def test_the_shared_topic_reads_any_name_and_without_a_binding_nothing_changes() -> None:
    value = orjson.dumps(body())
    shared = read_record(record_on(REQUESTS, value), REPLY_TOPICS, caller_topics=BINDING)
    assert shared.request is not None and shared.request.caller == "trader"  # refused later: check_arrival
    unbound = read_record(record_on(TRADER_TOPIC, orjson.dumps(body(caller="demo"))), REPLY_TOPICS)
    assert unbound.request is not None and unbound.request.caller == "demo"


# --- check_arrival ----------------------------------------------------------------------------------


def test_a_bound_name_on_another_topic_is_not_permitted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    binding = CallerTopics.of(BINDING)
    request = as_request(body())
    with caplog.at_level(logging.WARNING), pytest.raises(NotPermitted) as raised:
        check_arrival(binding, REQUESTS, request)
    assert raised.value.reason == "not_permitted" and raised.value.status is Status.REJECTED
    assert TRADER_TOPIC in str(raised.value)
    logged = next(r for r in caplog.records if r.msg == "request.not_permitted")
    fields = logged.fields  # type: ignore[attr-defined]
    assert (fields["caller"], fields["topic"], fields["bound_topic"]) == ("trader", REQUESTS, TRADER_TOPIC)


def test_a_bound_name_on_its_topic_and_unbound_names_anywhere_pass() -> None:
    binding = CallerTopics.of(BINDING)
    check_arrival(binding, TRADER_TOPIC, as_request(body()))
    for topic in (REQUESTS, TRADER_TOPIC, "elsewhere"):
        check_arrival(binding, topic, as_request(body(caller="demo")))
    check_arrival(CallerTopics.of({}), REQUESTS, as_request(body()))
    assert binding.caller_of(TRADER_TOPIC) == "trader" and binding.caller_of(REQUESTS) is None
    assert binding.topic_of("trader") == TRADER_TOPIC and binding.topic_of("demo") is None


# --- the gateway process ----------------------------------------------------------------------------


@pytest.fixture
async def bound(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """``GatewayApp`` with ``trader`` bound to ``api.requests.trader``, on the in-memory Kafka and gateway."""
    cluster = FakeCluster({REQUESTS: 1, TRADER_TOPIC: 1, RESPONSES: 2, DLQ: 1, "apihub.events": 1})
    made: list[FakeProducer] = []
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", factory(cluster, FakeProducer, made))
    settings = GatewaySettings(
        instance_id="gw-unit",
        redis=RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0"),
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", caller_topics=BINDING),
    )
    app = GatewayApp(settings)
    rig = build_gateway()
    app.gateway = rig.gateway
    await app.publisher.start()
    [producer] = made
    try:
        yield Harness(app, cluster, rig, producer)
    finally:
        await app.stop()


def trader_request() -> ApiRequest:
    return price_request(partition=0).model_copy(update={"caller": "trader"})


def only_answer(harness: Harness) -> ApiResponse:
    [(response, _)] = harness.answers()
    return response


async def test_the_app_refuses_a_bound_name_on_the_shared_topic(bound: Harness) -> None:
    request = trader_request()
    await bound.serve(record_on(REQUESTS, request.to_json(), request_headers(request)))
    response = only_answer(bound)
    assert (response.status, response.reason) == (Status.REJECTED, "not_permitted")
    assert response.request_id == request.request_id
    assert bound.cluster.records(DLQ) == []


async def test_the_app_serves_the_bound_caller_on_its_topic_with_or_without_headers(bound: Harness) -> None:
    with_headers = trader_request()
    await bound.serve(record_on(TRADER_TOPIC, with_headers.to_json(), request_headers(with_headers)))
    fields = orjson.loads(trader_request().to_json())
    del fields["caller"]
    await bound.serve(record_on(TRADER_TOPIC, orjson.dumps(fields), offset=8))
    answers = [response for response, _ in bound.answers()]
    assert [r.status for r in answers] == [Status.OK, Status.OK]
    assert {r.request_id for r in answers} == {with_headers.request_id, fields["request_id"]}


async def test_the_app_dead_letters_a_mismatch_and_answers_invalid(bound: Harness) -> None:
    impostor = price_request(partition=0)  # caller "unit" on trader's topic
    await bound.serve(record_on(TRADER_TOPIC, impostor.to_json(), request_headers(impostor)))
    response = only_answer(bound)
    assert (response.status, response.reason) == (Status.INVALID, "invalid_request")
    assert response.message is not None and response.message.startswith("caller_mismatch")
    [letter] = bound.cluster.records(DLQ)
    assert dict(letter.headers)["apihub-dlq-reason"].startswith(b"caller_mismatch")


# --- the consumer and the topics --------------------------------------------------------------------


async def test_the_consumer_reads_every_request_topic_with_aligned_assignments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = FakeCluster({REQUESTS: 2, TRADER_TOPIC: 2})
    made: list[FakeConsumer] = []
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", factory(cluster, FakeConsumer, made))

    async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
        return None

    rc = RequestConsumer(KafkaSettings(caller_topics=BINDING), handler, instance_id="unit")
    await rc.start()
    [client] = made
    assert client.subscribed == [REQUESTS, TRADER_TOPIC]
    assert [a.name for a in client.config["partition_assignment_strategy"]] == [
        RangePartitionAssignor.name,
        RoundRobinPartitionAssignor.name,
    ]
    await rc.stop()
    assert [a.name for a in assignors(KafkaSettings(), GroupQuota())] == [RoundRobinPartitionAssignor.name]


def test_topics_ensure_makes_caller_topics_like_the_request_topic() -> None:
    declared = load_topics()
    [spec] = caller_topic_specs(declared, [TRADER_TOPIC])
    model = next(s for s in declared if s.name == REQUESTS)
    assert (spec.name, spec.partitions, spec.replication_factor, spec.config) == (
        TRADER_TOPIC,
        model.partitions,
        model.replication_factor,
        model.config,
    )
    assert caller_topic_specs(declared, []) == []
    with pytest.raises(ValueError, match="no declared topic"):
        caller_topic_specs(declared, [TRADER_TOPIC], like="nope")


# --- security on every client -----------------------------------------------------------------------

SASL = KafkaSettings(
    bootstrap_servers="broker:9093",
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-256",
    sasl_username="trader",
    sasl_password=SecretStr("pw-never-logged"),
)


def test_with_security_keeps_the_target_and_takes_the_principal() -> None:
    target = KafkaSettings(bootstrap_servers="other:1", request_topic="replay.requests", group_id="g")
    moved = with_security(target, SASL)
    assert (moved.bootstrap_servers, moved.request_topic, moved.group_id) == (
        "other:1",
        "replay.requests",
        "g",
    )
    assert client_kwargs(moved) == client_kwargs(SASL)
    assert with_security(target, KafkaSettings()) == target


def test_security_env_round_trips_through_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = security_env(SASL)
    assert env["APIHUB_KAFKA__SASL_PASSWORD"] == "pw-never-logged"
    assert "APIHUB_KAFKA__SSL_CAFILE" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert client_kwargs(ClientSettings().kafka) == client_kwargs(SASL)
    assert security_env(KafkaSettings()) == {"APIHUB_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
                                             "APIHUB_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"}  # fmt: skip
