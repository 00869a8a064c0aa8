"""Topic declarations (``schemas/topics.yaml``) and ``apihub topics ensure``.

The callers' own request topics (``APIHUB_KAFKA__CALLER_TOPICS``) are ensured too, made like
``api.requests`` (``caller_topic_specs``). Ensure is idempotent: missing topics are created, existing
ones are compared with the declaration and any difference is reported as drift (never changed silently:
fewer partitions would move keys).

On a cluster of at least ``replicated.brokers`` live brokers (``make up KAFKA_NODES=3``) every topic is
created with the ``replicated`` replication factor and ``min.insync.replicas`` instead of the single-node
ones, so a write acknowledged by ``acks=all`` is on two brokers and survives one broker's loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

logger = logging.getLogger(__name__)

TOPICS_FILE = Path(__file__).resolve().parent.parent / "schemas" / "topics.yaml"


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass(frozen=True)
class Replicated:
    """What a topic gets on a cluster of at least ``brokers`` brokers."""

    brokers: int
    replication_factor: int
    min_insync_replicas: int

    def apply(self, spec: TopicSpec, live_brokers: int) -> TopicSpec:
        """``spec`` as declared on a smaller cluster, replicated on one this large."""
        if live_brokers < self.brokers:
            return spec
        config = {**spec.config, "min.insync.replicas": str(self.min_insync_replicas)}
        return TopicSpec(spec.name, spec.partitions, self.replication_factor, config)


@dataclass
class EnsureReport:
    """What ``ensure_topics`` found and did."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "name: why" for each topic Kafka would not create

    @property
    def changed(self) -> bool:
        """True when a topic was created."""
        return bool(self.created)


def load_topics(path: Path = TOPICS_FILE, *, rename: dict[str, str] | None = None) -> list[TopicSpec]:
    """The declared topics; ``rename`` maps declared names to the names to use (tests isolate this way)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    replication = int(doc.get("replication_factor", 1))
    names = rename or {}
    return [
        TopicSpec(
            name=names.get(t["name"], t["name"]),
            partitions=int(t["partitions"]),
            replication_factor=int(t.get("replication_factor", replication)),
            config={str(k): str(v) for k, v in (t.get("config") or {}).items()},
        )
        for t in doc["topics"]
    ]


def caller_topic_specs(
    specs: list[TopicSpec], caller_topics: Iterable[str], *, like: str = "api.requests"
) -> list[TopicSpec]:
    """The callers' own request topics (``APIHUB_KAFKA__CALLER_TOPICS``), each declared like ``like``:
    the same partition count puts a limit domain's key in the same partition number on every request
    topic, which the gateway's range assignor gives to one instance (``services.gateway.consumer``)."""
    model = next((s for s in specs if s.name == like), None)
    if model is None:
        raise ValueError(f"no declared topic {like!r} to make the caller topics like")
    return [
        TopicSpec(name, model.partitions, model.replication_factor, dict(model.config))
        for name in caller_topics
    ]


def load_replicated(path: Path = TOPICS_FILE) -> Replicated | None:
    """The declaration's ``replicated`` block, or None when it has none."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    block = doc.get("replicated")
    if not block:
        return None
    return Replicated(
        brokers=int(block["brokers"]),
        replication_factor=int(block["replication_factor"]),
        min_insync_replicas=int(block["min_insync_replicas"]),
    )


async def ensure_topics(
    bootstrap_servers: str,
    specs: list[TopicSpec],
    *,
    replicated: Replicated | None = None,
    client_kwargs: dict[str, Any] | None = None,
) -> EnsureReport:
    """Create missing topics and report drift of existing ones.

    ``replicated`` defaults to the declaration's block; ``client_kwargs`` are the connection's security
    settings (``services.kafka_client.client_kwargs``).
    """
    report = EnsureReport()
    policy = replicated if replicated is not None else load_replicated()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="apihub-topics", **(client_kwargs or {})
    )
    await admin.start()
    try:
        if policy is not None:
            live = len((await admin.describe_cluster())["brokers"])
            specs = [policy.apply(s, live) for s in specs]
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config) for s in missing
            ]
            refused = _refusals(await admin.create_topics(new))
            report.created = [s.name for s in missing if s.name not in refused]
            report.refused = [f"{name}: {why}" for name, why in refused.items()]
        present = [s for s in specs if s.name in existing]
        if present:
            layout = await _layout(admin, [s.name for s in present])
            configs = await _topic_configs(admin, [s.name for s in present])
            for spec in present:
                problems = _drift(spec, layout.get(spec.name, (0, 0)), configs.get(spec.name, {}))
                (report.drift if problems else report.unchanged).extend(
                    [f"{spec.name}: {p}" for p in problems] if problems else [spec.name]
                )
    finally:
        await admin.close()
    return report


def _refusals(answer: Any) -> dict[str, str]:
    """The topics a CreateTopics answer refused, with Kafka's reason; one that another process created
    between the listing and the request counts as created."""
    refused = {}
    for name, code, *message in getattr(answer, "topic_errors", ()):
        if code and code != TopicAlreadyExistsError.errno:
            said = message[0] if message and message[0] else None
            refused[name] = for_code(code).__name__ + (f": {said}" if said else "")
    return refused


def _drift(spec: TopicSpec, layout: tuple[int, int], config: dict[str, str]) -> list[str]:
    partitions, replicas = layout
    problems = []
    if partitions != spec.partitions:
        problems.append(f"partitions {partitions}, declared {spec.partitions}")
    if replicas != spec.replication_factor:
        problems.append(f"replication factor {replicas}, declared {spec.replication_factor}")
    for key, wanted in spec.config.items():
        if config.get(key) != wanted:
            problems.append(f"{key}={config.get(key)!r}, declared {wanted!r}")
    return problems


async def _layout(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, tuple[int, int]]:
    """Each topic's partition count and its smallest replica count."""
    described = await admin.describe_topics(names)
    return {
        t["topic"]: (len(t["partitions"]), min((len(p["replicas"]) for p in t["partitions"]), default=0))
        for t in described
    }


async def _topic_configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out
