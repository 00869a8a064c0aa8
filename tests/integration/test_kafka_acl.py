"""Callers tied to Kafka principals (issue 10): a private broker with SASL/SCRAM and the StandardAuthorizer.

One combined KRaft node from the local stack's jars listens with ``SASL_PLAINTEXT`` / ``SCRAM-SHA-512`` for
clients (its controller listener stays on loopback, plaintext, for the node itself). The SCRAM users
``admin`` (super user), ``gateway``, ``worker-a`` and ``worker-b`` are written at format time; the ACLs
(``ops/bin/kafka-acls``) are the ones docs/RELIABILITY.md lists:

- ``gateway``: read the request topic in its group, write every topic prefixed with the response topic's name
  (the shared one and the callers' own), the dead-letter and the events topic;
- ``worker-X``: write the request topic, read only ``<response topic>.worker-X``.

The real gateway (``apihub gateway``, a process) runs as ``gateway``; worker-a gets its answer on its own
reply topic; reading worker-b's reply topic, or writing the response or dead-letter topic, is refused by
the broker with an authorization error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from hubclient import HubClient
from hubclient.models import Status
from services.kafka_client import client_kwargs
from services.settings import KafkaSettings
from services.topics import TopicSpec, ensure_topics, load_topics
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import fake_credentials
from tests.integration.test_round_trip import PRICE

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = REPO / ".local" / "test-kafka-sasl"
MECHANISM = "SCRAM-SHA-512"
USERS = ("admin", "gateway", "worker-a", "worker-b")
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Names:
    """This test's topics and group; reply topics are ``<responses>.<caller>``."""

    requests: str
    responses: str
    dlq: str
    events: str
    group: str

    def reply_topic(self, caller: str) -> str:
        return f"{self.responses}.{caller}"


@dataclass(frozen=True)
class SaslBroker:
    """A running private broker: where it listens and each user's password."""

    bootstrap: str
    passwords: dict[str, str]
    state: Path

    def settings(self, user: str) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=MECHANISM,
            sasl_username=user,
            sasl_password=self.passwords[user],
        )

    def kwargs(self, user: str) -> dict[str, Any]:
        return client_kwargs(self.settings(user))

    def acl(self, *args: str) -> None:
        """``kafka-acls --add`` as the admin, on this broker."""
        subprocess.run(
            [str(REPO / "ops" / "bin" / "kafka-acls"), "--bootstrap-server", self.bootstrap,
             "--command-config", str(self.state / "admin.properties"), "--add", "--force", *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def kafka_libs() -> Path:
    """The local stack's Kafka jars, resolved by Maven on first use (ops/kafka/common.sh)."""
    out = subprocess.run(
        ["bash", "-c", 'source ops/kafka/common.sh && kafka_ensure_jars >&2 && echo "$KAFKA_LIBS"'],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return Path(out.stdout.strip())


def server_properties(state: Path, port: int, controller_port: int, admin_password: str) -> str:
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{admin_password}";'
    )
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        # admin for the tools; ANONYMOUS is the node's own broker-to-controller link on the loopback
        # controller listener (clients are never given that port).
        "super.users=User:admin;User:ANONYMOUS",
        f"log.dirs={state / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "",
    ])  # fmt: skip


async def wait_ready(broker: SaslBroker, proc: subprocess.Popen[bytes]) -> None:
    """Until the admin can list topics and reach the group coordinator over SASL."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SASL broker exited ({proc.returncode}); see {broker.state}/broker.log")
        admin = AIOKafkaAdminClient(
            bootstrap_servers=broker.bootstrap, request_timeout_ms=5000, **broker.kwargs("admin")
        )
        try:
            await admin.start()
            if (await admin.describe_cluster())["brokers"]:
                await admin.list_consumer_group_offsets("readiness")
                return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the SASL broker was not ready in {READY_TIMEOUT_S}s: {last!r}")


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[SaslBroker]:
    """The private broker for this module, stopped and deleted at its end."""
    libs = kafka_libs()
    state = STATE_ROOT / uuid.uuid4().hex[:10]
    (state / "data").mkdir(parents=True)
    port, controller_port = processes.free_port(), processes.free_port()
    passwords = {user: secrets.token_urlsafe(18) for user in USERS}
    broker = SaslBroker(f"127.0.0.1:{port}", passwords, state)
    (state / "server.properties").write_text(
        server_properties(state, port, controller_port, passwords["admin"])
    )
    (state / "admin.properties").write_text(
        f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={MECHANISM}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{passwords["admin"]}";\n'
    )
    java = ["java", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={state / 'logs'}",
            f"-Dlog4j2.configurationFile={REPO / 'ops' / 'kafka' / 'log4j2.properties'}",
            "-cp", f"{libs}/*"]  # fmt: skip
    scram = [
        arg
        for user in USERS
        for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={passwords[user]}]")
    ]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22],
         "-c", str(state / "server.properties"), *scram],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    log = (state / "broker.log").open("wb")
    proc = subprocess.Popen([*java, "kafka.Kafka", str(state / "server.properties")], stdout=log, stderr=log)
    try:
        asyncio.run(wait_ready(broker, proc))
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def grant(broker: SaslBroker, names: Names) -> None:
    """The ACLs of docs/RELIABILITY.md for the gateway and both workers."""
    user = "--allow-principal"
    broker.acl(user, "User:gateway", "--operation", "Read", "--topic", names.requests, "--group", names.group)
    broker.acl(user, "User:gateway", "--operation", "Write", "--resource-pattern-type", "prefixed",
               "--topic", names.responses)  # fmt: skip
    broker.acl(user, "User:gateway", "--operation", "Write", "--topic", names.dlq, "--topic", names.events)
    for worker in ("worker-a", "worker-b"):
        broker.acl(user, f"User:{worker}", "--operation", "Write", "--topic", names.requests)
        broker.acl(user, f"User:{worker}", "--operation", "Read", "--topic", names.reply_topic(worker))


async def create_topics(broker: SaslBroker, names: Names) -> None:
    declared = {s.name: s for s in load_topics()}
    rename = {
        "api.requests": names.requests,
        "api.responses": names.responses,
        "api.requests.dlq": names.dlq,
        "apihub.events": names.events,
    }
    specs = [s for s in load_topics(rename=rename) if s.name in rename.values()]
    responses = declared["api.responses"]
    specs += [
        TopicSpec(names.reply_topic(w), responses.partitions, responses.replication_factor, responses.config)
        for w in ("worker-a", "worker-b")
    ]
    report = await ensure_topics(broker.bootstrap, specs, client_kwargs=broker.kwargs("admin"))
    assert sorted(report.created) == sorted(s.name for s in specs)


def gateway_env(broker: SaslBroker, names: Names, services: Services, sandbox_url: str) -> dict[str, str]:
    kis_key, kis_secret = fake_credentials()
    kw_key, kw_secret = fake_credentials()
    return {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "APIHUB_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "APIHUB_KAFKA__SASL_MECHANISM": MECHANISM,
        "APIHUB_KAFKA__SASL_USERNAME": "gateway",
        "APIHUB_KAFKA__SASL_PASSWORD": broker.passwords["gateway"],
        "APIHUB_KAFKA__REQUEST_TOPIC": names.requests,
        "APIHUB_KAFKA__RESPONSE_TOPIC": names.responses,
        "APIHUB_KAFKA__EXTRA_REPLY_TOPICS": json.dumps(
            [names.reply_topic(w) for w in ("worker-a", "worker-b")]
        ),
        "APIHUB_KAFKA__DLQ_TOPIC": names.dlq,
        "APIHUB_KAFKA__EVENTS_TOPIC": names.events,
        "APIHUB_KAFKA__GROUP_ID": names.group,
        "APIHUB_REDIS__URL": services.redis_url,
        "APIHUB_REDIS__KEY_PREFIX": f"test:{names.group}:",
        "APIHUB_KIS__BASE_URL": f"{sandbox_url}/kis/real",
        "APIHUB_KIS__APPKEY": kis_key,
        "APIHUB_KIS__APPSECRET": kis_secret,
        "APIHUB_KIWOOM__BASE_URL": f"{sandbox_url}/kiwoom/real",
        "APIHUB_KIWOOM__APPKEY": kw_key,
        "APIHUB_KIWOOM__SECRETKEY": kw_secret,
        "APIHUB_INSTANCE_ID": f"{names.group}-1",
        "APIHUB_METRICS_HOST": "127.0.0.1",
        "APIHUB_METRICS_PORT": str(processes.free_port()),
    }


async def metadata_error(broker: SaslBroker, user: str, topic: str) -> int:
    """The error code the broker answers ``user`` asking for ``topic``'s metadata (0: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **broker.kwargs(user))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return int(described["error_code"])


async def fetch_as(broker: SaslBroker, user: str, topic: str, wait_s: float) -> list[bytes]:
    """The records of partition 0 of ``topic`` that ``user`` fetches within ``wait_s`` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False, **broker.kwargs(user)
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        deadline = time.monotonic() + wait_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await consumer.seek_to_beginning(tp)
        while not values and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in batch if r.value is not None)
    finally:
        await consumer.stop()
    return values


async def read_as(broker: SaslBroker, user: str, topic: str) -> list[bytes]:
    """What ``user`` reads of ``topic``; raises ``TopicAuthorizationFailedError`` when the broker answers
    its metadata request so, after checking that its consumer indeed fetches nothing (aiokafka's consumer
    only logs the refusal and keeps asking)."""
    code = await metadata_error(broker, user, topic)
    if code == TopicAuthorizationFailedError.errno:
        assert await fetch_as(broker, user, topic, wait_s=3) == []
        raise TopicAuthorizationFailedError(topic)
    assert code == 0, code
    return await fetch_as(broker, user, topic, wait_s=20)


async def write_as(broker: SaslBroker, user: str, topic: str) -> None:
    """Produce one record to ``topic`` as ``user``; raises what the broker answers."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=True, request_timeout_ms=10_000,
        **broker.kwargs(user),
    )  # fmt: skip
    await producer.start()
    try:
        async with asyncio.timeout(20):
            await producer.send_and_wait(topic, b'{"forged": true}', partition=0)
    finally:
        await producer.stop()


async def test_a_worker_reads_only_its_replies_and_cannot_write_the_gateways_topics(
    sasl_broker: SaslBroker, services: Services, sandbox_url: str, unique: str
) -> None:
    """worker-a is answered on its own reply topic through a gateway running as principal ``gateway``; it
    cannot read worker-b's replies nor write the response or dead-letter topic (authorization errors)."""
    names = Names(f"a{unique}.api.requests", f"a{unique}.api.responses", f"a{unique}.api.requests.dlq",
                  f"a{unique}.apihub.events", f"gw-{unique}")  # fmt: skip
    await create_topics(sasl_broker, names)
    await asyncio.to_thread(grant, sasl_broker, names)
    log_path = processes.LOG_DIR / f"gateway-acl-{unique}.log"
    async with processes.gateway(gateway_env(sasl_broker, names, services, sandbox_url), log_path=log_path):
        async with HubClient.connect(
            sasl_broker.bootstrap,
            caller="worker-a",
            request_topic=names.requests,
            reply_topic=names.reply_topic("worker-a"),
            reply_partition=0,
            client_options=sasl_broker.kwargs("worker-a"),
        ) as hub:
            response = await hub.submit("KIS", "FHKST01010100", PRICE, timeout=30)
        assert response.status is Status.OK, response
        # worker-b's reply topic holds an answer (written by the gateway's principal) worker-a cannot read.
        await write_as(sasl_broker, "gateway", names.reply_topic("worker-b"))
        assert await read_as(sasl_broker, "worker-a", names.reply_topic("worker-a"))  # its own: readable
        with pytest.raises(TopicAuthorizationFailedError):
            await read_as(sasl_broker, "worker-a", names.reply_topic("worker-b"))
        with pytest.raises(TopicAuthorizationFailedError):
            await read_as(sasl_broker, "worker-a", names.responses)
        for topic in (names.responses, names.dlq, names.reply_topic("worker-b")):
            with pytest.raises(TopicAuthorizationFailedError):
                await write_as(sasl_broker, "worker-a", topic)
        # The refusals are the ACLs' doing, not a broken client: worker-b reads its own reply topic.
        assert await read_as(sasl_broker, "worker-b", names.reply_topic("worker-b")) == [b'{"forged": true}']
        # ... and its grant does not reach worker-a's.
        with pytest.raises(TopicAuthorizationFailedError):
            await read_as(sasl_broker, "worker-b", names.reply_topic("worker-a"))
