"""Session-wide Kafka and Redis for the tests, isolated per test by topic names and key prefixes.

Where they come from, in this order:
1. addresses in the environment (``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL``);
2. testcontainers (the official ``apache/kafka`` image in KRaft mode, the same Kafka 4.x and pinned image as
   docker-compose.yml and the local stack's ops/kafka/pom.xml; Redis) when a Docker daemon answers;
3. the local stack (``ops/stack.sh up kafka redis``), stopped again at the end if the tests started it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "ops" / "stack.sh"
# The images of docker-compose.yml (tests/unit/test_deployment.py checks that they stay the same).
KAFKA_IMAGE = "apache/kafka:4.1.1@sha256:0bc1bb2478f45b6cea78864df86acdc11e8df2c5172477819a4d12942cbe5d40"
REDIS_IMAGE = "redis:7.4.5-alpine@sha256:bb186d083732f669da90be8b0f975a37812b15e913465bb14d845db72a4e3e08"


@dataclass(frozen=True)
class Services:
    """Addresses of the real Kafka and Redis the integration tests use."""

    kafka_bootstrap: str
    redis_url: str
    origin: str


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        with contextlib.closing(docker.from_env(timeout=3)) as client:
            return bool(client.ping())
    except Exception:
        return False


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


#: Broker settings of the Kafka container: one KRaft node configured like ops/stack.sh's local broker.
KAFKA_CONTAINER_ENV = {
    "CLUSTER_ID": "esEQOtRrQeGcfNgit9jHZw",
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    # PLAINTEXT is published to the tests; BROKER is the broker's own (transaction markers go through it).
    "KAFKA_LISTENERS": "PLAINTEXT://:9092,BROKER://:19092,CONTROLLER://:9093",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    "KAFKA_NUM_PARTITIONS": "1",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
}
KAFKA_STARTER = "/apihub-kafka-start.sh"


def kafka_start_script(host: str, port: int) -> str:
    """The container's start script, written once the published port is known: advertise it, then run the
    image's own entry point (``/etc/kafka/docker/run``)."""
    listeners = f"PLAINTEXT://{host}:{port},BROKER://localhost:19092"
    return f"export KAFKA_ADVERTISED_LISTENERS='{listeners}'\nexec /etc/kafka/docker/run\n"


def apache_kafka_container(image: str = KAFKA_IMAGE) -> Any:
    """A KRaft ``apache/kafka`` container; ``get_bootstrap_server()`` gives its address.

    testcontainers' ``community.kafka.KafkaContainer`` drives Confluent's start scripts (``/etc/confluent``),
    which the official image does not have; this one uses the same trick (wait for a script, written after
    the port is published) with the official image's entry point.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    class ApacheKafkaContainer(DockerContainer):
        def __init__(self) -> None:
            super().__init__(image)
            self.with_exposed_ports(9092)
            self.with_envs(**KAFKA_CONTAINER_ENV)
            self.with_command(
                ["sh", "-c", f"while [ ! -f {KAFKA_STARTER} ]; do sleep 0.1; done; exec sh {KAFKA_STARTER}"]
            )

        def get_bootstrap_server(self) -> str:
            return f"{self.get_container_host_ip()}:{self.get_exposed_port(9092)}"

        def start(self) -> Any:
            super().start()
            host, port = self.get_container_host_ip(), self.get_exposed_port(9092)
            self.copy_into_container(kafka_start_script(host, port).encode(), KAFKA_STARTER)
            started = LogMessageWaitStrategy(re.compile(r"Kafka Server started")).with_startup_timeout(120)
            started.wait_until_ready(self)
            return self

    return ApacheKafkaContainer()


def _from_testcontainers(stack: ExitStack) -> Services:
    from testcontainers.community.redis import RedisContainer

    kafka = stack.enter_context(apache_kafka_container())
    redis = stack.enter_context(RedisContainer(REDIS_IMAGE))
    redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
    return Services(kafka.get_bootstrap_server(), redis_url, "testcontainers")


def _from_local_stack(stack: ExitStack) -> Services:
    kafka_port = int(os.environ.get("APIHUB_KAFKA_PORT", "19092"))
    redis_port = int(os.environ.get("APIHUB_REDIS_PORT", "16379"))
    already_up = _port_open("127.0.0.1", kafka_port) and _port_open("127.0.0.1", redis_port)
    subprocess.run(["bash", str(STACK), "up", "kafka", "redis"], check=True, cwd=REPO, timeout=600)
    if not already_up:
        stack.callback(subprocess.run, ["bash", str(STACK), "down", "kafka", "redis"], cwd=REPO, timeout=120)
    env = _read_env_file(REPO / ".local" / "stack.env")
    return Services(env["KAFKA_BOOTSTRAP_SERVERS"], env["REDIS_URL"], "local stack")


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration/ (real services) so ``-m "not integration"`` skips it, by
    that directory, not by a folder name anywhere in the path (a checkout under ``integration/`` would mark
    every test)."""
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Real Kafka and Redis, found or started once per test session."""
    with ExitStack() as stack:
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"):
            yield Services(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["REDIS_URL"], "environment")
        elif os.environ.get("APIHUB_TEST_NO_DOCKER") != "1" and _docker_answers():
            yield _from_testcontainers(stack)
        else:
            yield _from_local_stack(stack)


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps this test's topics, groups and keys apart from every other test's."""
    return uuid.uuid4().hex[:10]
