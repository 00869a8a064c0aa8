"""The three-node KRaft cluster of the Kafka scenarios, run with ``ops/stack.sh`` (``KAFKA_NODES=3``).

It lives beside the session's single node: its brokers listen on ``APIHUB_KAFKA_CLUSTER_PORT`` (default:
``APIHUB_KAFKA_PORT`` + 10, so 19102/19104/19106 and controllers 19103/19105/19107 on the default ports),
its nodes keep their state in ``.local/kafka-N/`` and its ``stack.env`` goes to ``.local/chaos/`` instead of
the stack's. A cluster this module started is stopped at the end; one already running is left running.

    async with three_node_cluster() as cluster:
        await cluster.kill(2)          # SIGKILL node 2
        await cluster.start()          # start every node not running, wait until each is ready
        await cluster.restart(3)       # SIGTERM node 3 (controlled shutdown), start it again
        await cluster.in_sync(60)      # every partition of every topic has all its replicas in sync
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.settings import GatewaySettings
from services.topics import ensure_topics, load_topics

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "ops" / "stack.sh"
LOCAL = REPO / ".local"
NODES = (1, 2, 3)
STACK_TIMEOUT_S = 240


def cluster_port() -> int:
    """The first broker's port (the others follow two apart)."""
    explicit = os.environ.get("APIHUB_KAFKA_CLUSTER_PORT")
    if explicit:
        return int(explicit)
    return int(os.environ.get("APIHUB_KAFKA_PORT", "19092")) + 10


@dataclass(frozen=True)
class Cluster:
    """Where the cluster listens and how to hurt it."""

    port: int

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(n)}" for n in NODES)

    def node_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    def env(self) -> dict[str, str]:
        """``ops/stack.sh``'s environment for this cluster."""
        return {
            **os.environ,
            "KAFKA_NODES": "3",
            "APIHUB_KAFKA_PORT": str(self.port),
            "APIHUB_KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "APIHUB_STACK_ENV": str(LOCAL / "chaos" / "kafka-cluster.env"),
        }

    async def stack(self, *args: str) -> None:
        """Run ``ops/stack.sh ARGS`` for this cluster; raises with its output when it fails."""
        (LOCAL / "chaos").mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            "bash", str(STACK), *args, env=self.env(), cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with asyncio.timeout(STACK_TIMEOUT_S):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"ops/stack.sh {' '.join(args)} failed:\n{out.decode(errors='replace')}")

    def pid(self, node: int) -> int | None:
        """The node's pid from its pid file, when it has one."""
        path = LOCAL / f"kafka-{node}" / f"kafka-{node}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    async def start(self) -> None:
        """Start every node that is not running and wait until each is ready; once more when a node
        failed to start (its port is in the ephemeral range, so a client's outgoing connection may hold
        it for a moment)."""
        try:
            await self.stack("up", "kafka")
        except RuntimeError:
            await asyncio.sleep(2)
            await self.stack("up", "kafka")

    async def kill(self, node: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown) and wait until it is gone."""
        pid = self.pid(node)
        if pid is None:
            raise RuntimeError(f"kafka-{node} has no pid file")
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not _running(pid):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"kafka-{node} (pid {pid}) still runs 10 s after SIGKILL")

    async def restart(self, node: int) -> None:
        """Stop one node with SIGTERM (a controlled shutdown) and start it again."""
        await self.stack("down", f"kafka-{node}")
        await self.stack("up", f"kafka-{node}")

    async def _describe(self, topic: str) -> dict[str, Any]:
        """``topic``'s metadata: its partitions, their leaders and replicas."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return dict(described)

    async def leader_of(self, topic: str, partition: int = 0) -> int:
        """The node leading one partition."""
        described = await self._describe(topic)
        return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))

    async def busiest_partition(self, topic: str) -> int:
        """The partition of ``topic`` holding the most records (the requests' key is the limit domain, so
        all KIS requests share one partition)."""
        described = await self._describe(topic)
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        try:
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return int(max(ends, key=lambda tp: ends[tp]).partition)

    async def under_replicated(self) -> int:
        """Partitions (of every topic) with fewer in-sync replicas than replicas."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics(await admin.list_topics())
        finally:
            await admin.close()
        return sum(1 for t in described for p in t["partitions"] if len(p["isr"]) < len(p["replicas"]))

    async def in_sync(self, timeout_s: float) -> float:
        """Wait until no partition is under-replicated; returns the seconds it took."""
        started = time.monotonic()
        while True:
            with contextlib.suppress(Exception):  # a node just started may not answer metadata yet
                if await self.under_replicated() == 0:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"partitions still under-replicated after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)


def _running(pid: int | None) -> bool:
    """True while ``pid`` is a live process (an exited, unreaped one counts as gone)."""
    if pid is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.asynccontextmanager
async def three_node_cluster() -> AsyncIterator[Cluster]:
    """The cluster, started when no node runs and then stopped at the end."""
    cluster = Cluster(cluster_port())
    started_here = not any(_running(cluster.pid(n)) for n in NODES)
    await cluster.start()
    try:
        yield cluster
    finally:
        if started_here:
            await cluster.stack("down", "kafka-1", "kafka-2", "kafka-3")


@contextlib.asynccontextmanager
async def hub_topics(cluster: Cluster, prefix: str) -> AsyncIterator[tuple[str, str, str]]:
    """This run's request, response and dead-letter topics on the cluster (replication factor 3,
    ``min.insync.replicas=2`` by ``schemas/topics.yaml``'s ``replicated`` block) and the events topic; the
    run's own topics are deleted at the end (every node loads every partition at start, so leftovers
    would slow the next run's restarts)."""
    names = {
        "api.requests": f"{prefix}.requests",
        "api.responses": f"{prefix}.responses",
        "api.requests.dlq": f"{prefix}.dlq",
        "apihub.events": "apihub.events",  # the gateways' default events topic
    }
    specs = [s for s in load_topics(rename=names) if s.name in names.values()]
    report = await ensure_topics(cluster.bootstrap, specs)
    assert not report.drift, report.drift
    own = [names["api.requests"], names["api.responses"], names["api.requests.dlq"]]
    try:
        yield own[0], own[1], own[2]
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(own)
        finally:
            await admin.close()


def on_cluster(settings: GatewaySettings, cluster: Cluster, topics: tuple[str, str, str]) -> GatewaySettings:
    """``settings`` with the cluster's brokers and this run's topics."""
    requests, responses, dlq = topics
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": cluster.bootstrap,
            "request_topic": requests,
            "response_topic": responses,
            "dlq_topic": dlq,
        }
    )
    return settings.model_copy(update={"kafka": kafka})
