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

Callers bound to their principal (``APIHUB_KAFKA__CALLER_TOPICS``): ``trader`` alone may write
``<requests>.trader``; the gateway reads it too, so a request there is trader's and is served with trader's
grants, while ``demo`` claiming the name ``trader`` on the shared topic is refused ``not_permitted``, and
cannot write trader's topic at all.

Every client takes the security settings: the market feed (``apihub feed``, a process), the demo's whole
repair loop (its topics, feed, tasks, the three worker processes and its reader), ``apihub demo``'s round
trips and ``ops/wait_kafka.py`` run as principal ``demo``; without credentials the feed, ``apihub demo``
and wait_kafka fail with one line and the hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from hubclient import HubClient
from hubclient.models import Status
from services.demo.repair import run_repair_loop, run_topics
from services.kafka_client import SECURITY_HINT, client_kwargs, security_env
from services.sandbox.feed import sandbox_market
from services.sandbox.settings import SandboxSettings
from services.settings import ClientSettings, KafkaSettings
from services.topics import TopicSpec, caller_topic_specs, ensure_topics, load_topics
from services.worker.main import WORKERS
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import fake_credentials
from tests.integration.test_adapters_sandbox import BALANCE_PARAMS
from tests.params import PRICE

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = REPO / ".local" / "test-kafka-sasl"
MECHANISM = "SCRAM-SHA-512"
USERS = ("admin", "gateway", "worker-a", "worker-b", "demo", "trader")
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

    def caller_topic(self, caller: str) -> str:
        return f"{self.requests}.{caller}"

    @classmethod
    def of(cls, tag: str) -> Names:
        return cls(f"{tag}.api.requests", f"{tag}.api.responses", f"{tag}.api.requests.dlq",
                   f"{tag}.apihub.events", f"gw-{tag}")  # fmt: skip


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


async def create_topics(
    broker: SaslBroker,
    names: Names,
    callers: tuple[str, ...] = ("worker-a", "worker-b"),
    bound: tuple[str, ...] = (),
) -> None:
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
        for w in callers
    ]
    specs += caller_topic_specs(specs, [names.caller_topic(c) for c in bound], like=names.requests)
    report = await ensure_topics(broker.bootstrap, specs, client_kwargs=broker.kwargs("admin"))
    assert sorted(report.created) == sorted(s.name for s in specs)


def gateway_env(
    broker: SaslBroker,
    names: Names,
    services: Services,
    sandbox_url: str,
    callers: tuple[str, ...] = ("worker-a", "worker-b"),
) -> dict[str, str]:
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
        "APIHUB_KAFKA__EXTRA_REPLY_TOPICS": json.dumps([names.reply_topic(w) for w in callers]),
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


async def describe_as(broker: SaslBroker, user: str, topic: str) -> dict[str, Any]:
    """``topic``'s metadata as the broker answers ``user``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **broker.kwargs(user))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return dict(described)


async def metadata_error(broker: SaslBroker, user: str, topic: str) -> int:
    """The error code the broker answers ``user`` asking for ``topic``'s metadata (0: none)."""
    return int((await describe_as(broker, user, topic))["error_code"])


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


# --- callers bound to their principal by a request topic of their own --------------------------------

PERMISSIONS = """\
default:
  - kinds: [quote, read]
callers:
  trader:
    - kinds: [quote, read]
    - providers: [KIS]
      limit_classes: [ledger]
"""


def grant_bound(broker: SaslBroker, names: Names) -> None:
    """docs/RELIABILITY.md's ACLs with trader bound to ``<requests>.trader`` and demo on the shared topic."""
    user, trader_topic = "--allow-principal", names.caller_topic("trader")
    broker.acl(user, "User:gateway", "--operation", "Read", "--topic", names.requests,
               "--topic", trader_topic, "--group", names.group)  # fmt: skip
    broker.acl(user, "User:gateway", "--operation", "Write", "--resource-pattern-type", "prefixed",
               "--topic", names.responses)  # fmt: skip
    broker.acl(user, "User:gateway", "--operation", "Write", "--topic", names.dlq, "--topic", names.events)
    broker.acl(user, "User:demo", "--operation", "Write", "--topic", names.requests)
    broker.acl(user, "User:trader", "--operation", "Write", "--topic", trader_topic)
    for caller in ("demo", "trader"):
        broker.acl(user, f"User:{caller}", "--operation", "Read", "--topic", names.reply_topic(caller))


def hub_as(broker: SaslBroker, principal: str, names: Names, *, caller: str, request_topic: str) -> HubClient:
    """A hub client connected as ``principal``, naming itself ``caller``, answered on its own reply topic."""
    return HubClient.connect(
        broker.bootstrap,
        caller=caller,
        request_topic=request_topic,
        reply_topic=names.reply_topic(principal),
        reply_partition=0,
        client_options=broker.kwargs(principal),
    )


async def test_a_callers_own_topic_binds_its_name_to_its_principal(
    sasl_broker: SaslBroker, services: Services, sandbox_url: str, unique: str, tmp_path: Path
) -> None:
    """trader on its own topic gets a ledger-class call served; demo claiming ``trader`` on the shared topic
    is refused not_permitted (even a quote); demo as itself keeps its own grants; demo cannot write
    trader's topic (TOPIC_AUTHORIZATION_FAILED)."""
    names = Names.of(f"c{unique}")
    trader_topic = names.caller_topic("trader")
    await create_topics(sasl_broker, names, ("demo", "trader"), bound=("trader",))
    await asyncio.to_thread(grant_bound, sasl_broker, names)
    permissions = tmp_path / "permissions.yaml"
    permissions.write_text(PERMISSIONS)
    env = {
        **gateway_env(sasl_broker, names, services, sandbox_url, ("demo", "trader")),
        "APIHUB_KAFKA__CALLER_TOPICS": json.dumps({trader_topic: "trader"}),
        "APIHUB_PERMISSIONS_FILE": str(permissions),
    }
    log_path = processes.LOG_DIR / f"gateway-acl-bound-{unique}.log"
    async with processes.gateway(env, log_path=log_path):
        async with hub_as(
            sasl_broker, "trader", names, caller="trader", request_topic=trader_topic
        ) as trader:
            served = await trader.submit("KIS", "TTTC8434R", BALANCE_PARAMS, timeout=30)
        async with hub_as(sasl_broker, "demo", names, caller="trader", request_topic=names.requests) as fake:
            borrowed = await fake.submit("KIS", "TTTC8434R", BALANCE_PARAMS, timeout=30)
            borrowed_quote = await fake.submit("KIS", "FHKST01010100", PRICE, timeout=30)
        async with hub_as(sasl_broker, "demo", names, caller="demo", request_topic=names.requests) as demo:
            own_quote = await demo.submit("KIS", "FHKST01010100", PRICE, timeout=30)
            own_ledger = await demo.submit("KIS", "TTTC8434R", BALANCE_PARAMS, timeout=30)
    assert served.status is Status.OK, served
    for refused in (borrowed, borrowed_quote):
        assert (refused.status, refused.reason) == (Status.REJECTED, "not_permitted"), refused
        assert refused.message is not None and trader_topic in refused.message
    assert own_quote.status is Status.OK, own_quote
    assert (own_ledger.status, own_ledger.reason) == (Status.REJECTED, "not_permitted"), own_ledger
    log = log_path.read_text()
    assert '"bound_topic"' in log and "request.not_permitted" in log
    assert not any(password in log for password in sasl_broker.passwords.values())
    with pytest.raises(TopicAuthorizationFailedError):
        await write_as(sasl_broker, "demo", trader_topic)


# --- every client takes the security settings: feed, repair loop, wait_kafka ---------------------------


def grant_demo_loop(broker: SaslBroker, names: Names, run: str) -> None:
    """The gateway's ACLs, and demo's: the hub topics, and everything of its repair run (topics prefixed
    ``demo-<run>.``, the workers' groups and transactional ids prefixed ``<worker>.demo-<run>``)."""
    user = "--allow-principal"
    broker.acl(user, "User:gateway", "--operation", "Read", "--topic", names.requests, "--group", names.group)
    broker.acl(user, "User:gateway", "--operation", "Write", "--resource-pattern-type", "prefixed",
               "--topic", names.responses)  # fmt: skip
    broker.acl(user, "User:gateway", "--operation", "Write", "--topic", names.dlq, "--topic", names.events)
    broker.acl(user, "User:demo", "--operation", "Write", "--topic", names.requests)
    broker.acl(user, "User:demo", "--operation", "Read", "--topic", names.reply_topic("demo"))
    # ops/wait_kafka.py asks the group coordinator about this group: Describe is all it needs.
    broker.acl(user, "User:demo", "--operation", "Describe", "--group", "apihub-readiness")
    per_worker = [arg for w in WORKERS for arg in ("--group", f"{w}.demo-{run}", "--transactional-id",
                                                   f"{w}.demo-{run}")]  # fmt: skip
    broker.acl(user, "User:demo", "--operation", "All", "--resource-pattern-type", "prefixed",
               "--topic", f"demo-{run}.", *per_worker)  # fmt: skip


async def records_in(broker: SaslBroker, user: str, topic: str) -> int:
    """How many records ``topic`` holds over all its partitions, as ``user`` sees them (end offsets)."""
    described = await describe_as(broker, user, topic)
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, **broker.kwargs(user))
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def cli(args: list[str], env: dict[str, str], timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """A command with the test's environment minus any Kafka security, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("APIHUB_KAFKA__")}
    return subprocess.run(
        args, env={**base, **env}, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.mark.timeout(300)  # the repair loop takes about 30 s here; the shared machine may be slower
async def test_the_feed_the_repair_loop_and_wait_kafka_run_as_a_principal(
    sasl_broker: SaslBroker, services: Services, sandbox_url: str, unique: str
) -> None:
    """As principal ``demo``: wait_kafka finds the broker ready, ``apihub feed`` publishes a day, and the
    whole repair loop (with its three worker processes) repairs everything it injected. Without
    credentials wait_kafka and the feed fail with one line naming the settings to set, no traceback."""
    names = Names.of(f"r{unique}")
    run = uuid.uuid4().hex[:8]
    bootstrap, demo = sasl_broker.bootstrap, sasl_broker.settings("demo")
    await create_topics(sasl_broker, names, ("demo",))
    ticks = load_topics(rename={"market.ticks": f"demo-{run}.feed.ticks"})
    await ensure_topics(
        bootstrap, [s for s in ticks if s.name.startswith("demo-")], client_kwargs=sasl_broker.kwargs("admin")
    )
    await asyncio.to_thread(grant_demo_loop, sasl_broker, names, run)
    as_demo = security_env(demo)

    wait = [sys.executable, "ops/wait_kafka.py", "--bootstrap", bootstrap]
    ready = await asyncio.to_thread(cli, [*wait, "--timeout", "30"], as_demo)
    assert ready.returncode == 0, ready.stderr
    bare = await asyncio.to_thread(cli, [*wait, "--timeout", "4"], {})
    assert bare.returncode == 1 and SECURITY_HINT in bare.stderr and "Traceback" not in bare.stderr, (
        bare.stderr
    )

    day = sandbox_market(SandboxSettings()).latest_trading_day(date.today())
    assert day is not None
    feed = [sys.executable, "-m", "services.cli", "feed", "--bootstrap-servers", bootstrap,
            "--topic", f"demo-{run}.feed.ticks", "--symbols", "005930", "--day", day.isoformat()]  # fmt: skip
    published = await asyncio.to_thread(cli, feed, as_demo)
    assert published.returncode == 0, published.stderr[-2000:]
    assert json.loads(published.stdout)["published"] > 0
    assert (
        await records_in(sasl_broker, "demo", f"demo-{run}.feed.ticks")
        >= json.loads(published.stdout)["published"]
    )
    refused = await asyncio.to_thread(cli, feed, {}, 120)
    assert refused.returncode == 2, (refused.stdout[-500:], refused.stderr[-2000:])
    assert "Kafka is not reachable" in refused.stderr and SECURITY_HINT in refused.stderr
    assert "Traceback" not in refused.stderr

    hub = demo.model_copy(
        update={"request_topic": names.requests, "response_topic": names.reply_topic("demo")}
    )
    log_path = processes.LOG_DIR / f"gateway-acl-loop-{unique}.log"
    env = gateway_env(sasl_broker, names, services, sandbox_url, ("demo",))
    async with processes.gateway(env, log_path=log_path):
        summary = await run_repair_loop(ClientSettings(kafka=hub), run=run, timeout_s=180)
        # `apihub demo`'s round trips: as demo they are answered; without credentials, one line and the hint.
        demo_cli = [sys.executable, "-m", "services.cli", "demo", "--no-repair", "--rounds", "1"]
        hub_env = {
            "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "APIHUB_KAFKA__REQUEST_TOPIC": names.requests,
            "APIHUB_KAFKA__RESPONSE_TOPIC": names.reply_topic("demo"),
            "APIHUB_GATEWAY_METRICS_URL": f"http://127.0.0.1:{env['APIHUB_METRICS_PORT']}",
        }
        calls = await asyncio.to_thread(cli, demo_cli, {**hub_env, **as_demo}, 120)
        assert calls.returncode == 0, (calls.stdout[-2000:], calls.stderr[-2000:])
        bare_calls = await asyncio.to_thread(cli, demo_cli, hub_env, 120)
        assert bare_calls.returncode == 2, (bare_calls.stdout[-1000:], bare_calls.stderr[-2000:])
        assert SECURITY_HINT in bare_calls.stderr and "Traceback" not in bare_calls.stderr
    assert summary.settled, summary
    assert summary.injected > 0 and summary.injected == summary.found == summary.repaired, summary
    assert summary.verified == summary.windows, summary
    assert await records_in(sasl_broker, "demo", run_topics(run).verification_results) >= summary.windows
    # Without credentials the loop stops at its first client with Kafka's error (apihub adds the hint).
    plain = KafkaSettings(bootstrap_servers=bootstrap, request_topic=names.requests)
    with pytest.raises(KafkaError):
        async with asyncio.timeout(90):
            await run_repair_loop(ClientSettings(kafka=plain), run=uuid.uuid4().hex[:8], timeout_s=30)
