"""Topic declarations (``schemas/topics.yaml``) and ``apihub topics ensure``.

Ensure is idempotent: missing topics are created, existing ones are compared with the declaration and
any difference is reported as drift (never changed silently: fewer partitions would move keys).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)

TOPICS_FILE = Path(__file__).resolve().parent.parent / "schemas" / "topics.yaml"


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class EnsureReport:
    """What ``ensure_topics`` found and did."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

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


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> EnsureReport:
    """Create missing topics and report drift of existing ones."""
    report = EnsureReport()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="apihub-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config) for s in missing
            ]
            # Another process may create them between our listing and our request.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            report.created = [s.name for s in missing]
        present = [s for s in specs if s.name in existing]
        if present:
            partitions = await _partition_counts(admin, [s.name for s in present])
            configs = await _topic_configs(admin, [s.name for s in present])
            for spec in present:
                problems = _drift(spec, partitions.get(spec.name, 0), configs.get(spec.name, {}))
                (report.drift if problems else report.unchanged).extend(
                    [f"{spec.name}: {p}" for p in problems] if problems else [spec.name]
                )
    finally:
        await admin.close()
    return report


def _drift(spec: TopicSpec, partitions: int, config: dict[str, str]) -> list[str]:
    problems = []
    if partitions != spec.partitions:
        problems.append(f"partitions {partitions}, declared {spec.partitions}")
    for key, wanted in spec.config.items():
        if config.get(key) != wanted:
            problems.append(f"{key}={config.get(key)!r}, declared {wanted!r}")
    return problems


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in described}


async def _topic_configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out
