"""The example clients of examples/, built from the registries, against a real Kafka, gateway and sandbox:
a Spring Kafka ReplyingKafkaTemplate with its defaults (examples/jvm-spring) and a kafkajs client written
against schemas/asyncapi.yaml (examples/node) each get an ok, an invalid and a rejected answer carrying the
headers docs/CONTRACT.md documents."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hubclient.headers import encode_partition
from tests.conftest import REPO, Services
from tests.integration.conftest import GatewayFactory, Topics
from tests.params import PRICE
from tests.sandbox.test_sandbox_kis_trading import BALANCE
from tests.toolchains import maven_package, node, npm_modules

# A first run builds from the registries (Maven Central, npm) into .local/: minutes, not the usual 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# An unlisted caller may read quotes; the account balance needs a grant it does not have.
PERMISSIONS = """
callers:
  trader:
    - kinds: [quote, read]
"""
CALLS = [
    f"KIS/FHKST01010100={json.dumps(PRICE)}",  # ok
    f"NYSE/FHKST01010100={json.dumps(PRICE)}",  # invalid: no such provider (the schema refuses it)
    f"KIS/TTTC8434R={json.dumps(BALANCE)}",  # rejected: not_permitted
]
EXPECTED = [("ok", None), ("invalid", "invalid_request"), ("rejected", "not_permitted")]
SPRING = REPO / "examples" / "jvm-spring"
NODE = REPO / "examples" / "node"


def hexed(text: str) -> str:
    """A header value as the clients print it."""
    return text.encode().hex()


def check_answers(lines: list[dict[str, Any]], topics: Topics, caller: str, reply_partition: int) -> None:
    """Each answer has the expected status and reason and the documented headers: the client's own
    correlation bytes back unchanged, the schema version, and for a request the gateway could read, its
    reply address and caller echoed."""
    assert [(line["response"]["status"], line["response"]["reason"]) for line in lines] == EXPECTED, lines
    for line in lines:
        headers, response = line["headers"], line["response"]
        assert headers["kafka_correlationId"] == line["sent_correlation_id"]
        assert len(line["sent_correlation_id"]) == 32  # 16 bytes, not the request id
        assert headers["apihub-schema"] == hexed("1")
        assert line["partition"] == reply_partition
        assert line["key"] == response["request_id"]
        if response["status"] != "invalid":
            assert headers["kafka_replyTopic"] == hexed(topics.responses)
            assert headers["kafka_replyPartition"] == encode_partition(reply_partition).hex()
            assert headers["apihub-caller"] == hexed(caller)
            assert headers["apihub-deadline-ms"]


def answers(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON lines a client printed, or a failure with its output."""
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


async def test_spring_replying_kafka_template_with_its_defaults(
    services: Services, topics: Topics, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Spring's ReplyingKafkaTemplate (its own 16-byte correlation ids, reply container on partition 0 of
    the response topic, reply address only in its headers) gets ok, invalid and rejected answers."""
    classpath = await asyncio.to_thread(maven_package, SPRING, timeout_s=600)
    java = shutil.which("java")
    assert java is not None, "java is not installed"
    permissions = tmp_path / "permissions.yaml"
    permissions.write_text(PERMISSIONS)
    command = [java, "-cp", classpath, "apihub.example.HubWorker", services.kafka_bootstrap]
    command += [topics.requests, topics.responses, "jvm-worker", *CALLS]
    async with gateway(permissions_file=str(permissions)):
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=240, check=False
        )
    check_answers(answers(done), topics, "jvm-worker", reply_partition=0)


async def test_node_client_written_against_the_asyncapi_document(
    services: Services, topics: Topics, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The kafkajs client (reply address in the body, its own 16-byte kafka_correlationId) gets ok,
    invalid and rejected answers on the partition it named."""
    manifest = json.loads((NODE / "package.json").read_text())
    modules = await asyncio.to_thread(npm_modules, "example-node", manifest["dependencies"], timeout_s=300)
    permissions = tmp_path / "permissions.yaml"
    permissions.write_text(PERMISSIONS)
    args = [services.kafka_bootstrap, topics.requests, topics.responses, "node-worker", *CALLS]
    async with gateway(permissions_file=str(permissions)):
        done = await asyncio.to_thread(node, NODE / "client.js", args, modules, timeout_s=240)
    lines = answers(done)
    check_answers(lines, topics, "node-worker", reply_partition=lines[0]["partition"])
    assert all(line["response"]["request_id"] == line["request_id"] for line in lines)
