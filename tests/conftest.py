"""Session-wide Kafka and Redis for the tests, isolated per test by topic names and key prefixes.

Where they come from, in this order:
1. addresses in the environment (``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL``);
2. testcontainers (Confluent Kafka in KRaft mode, Redis) when a Docker daemon answers;
3. the local stack (``ops/stack.sh up kafka redis``), stopped again at the end if the tests started it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "ops" / "stack.sh"
CONFLUENT_IMAGE = "confluentinc/cp-kafka:7.6.1"
REDIS_IMAGE = "redis:7-alpine"


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


def _from_testcontainers(stack: ExitStack) -> Services:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    kafka = stack.enter_context(KafkaContainer(CONFLUENT_IMAGE).with_kraft())
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration/ (real services) so ``-m "not integration"`` skips it."""
    for item in items:
        if "integration" in item.path.parts:
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
