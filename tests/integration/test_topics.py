"""``apihub topics ensure`` creates what is missing, changes nothing the second time and reports drift."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services import cli
from services.settings import WorkerTopics
from services.topics import ensure_topics, load_topics
from tests.conftest import Services


async def test_ensure_twice(services: Services, unique: str) -> None:
    """The first run creates every declared topic, the second finds them all unchanged."""
    specs = load_topics(rename={t.name: f"e{unique}.{t.name}" for t in load_topics()})
    first = await ensure_topics(services.kafka_bootstrap, specs)
    second = await ensure_topics(services.kafka_bootstrap, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    assert second.created == [] and second.drift == []
    assert sorted(second.unchanged) == sorted(s.name for s in specs)


async def test_drift_is_reported(services: Services, unique: str) -> None:
    """A topic created by hand with other partitions and policy is reported, not silently changed."""
    (spec,) = [
        s
        for s in load_topics(rename={"market.candles": f"d{unique}.candles"})
        if s.name == f"d{unique}.candles"
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(spec.name, 2, 1, topic_configs={"cleanup.policy": "delete"})])
        async with asyncio.timeout(10):  # metadata reaches the listing a moment after creation
            while spec.name not in await admin.list_topics():
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    report = await ensure_topics(services.kafka_bootstrap, [spec])
    assert report.created == []
    assert any("partitions 2, declared 6" in d for d in report.drift)
    assert any("cleanup.policy='delete', declared 'compact'" in d for d in report.drift)


def test_ensure_creates_the_topics_under_the_names_the_settings_give(
    services: Services, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``apihub topics ensure`` with renamed topics (``APIHUB_KAFKA__*_TOPIC``, ``APIHUB_TOPICS__*``) and a
    caller topic creates them under those names, the caller topic like the renamed request topic."""
    renamed = {
        "APIHUB_KAFKA__REQUEST_TOPIC": f"n{unique}.requests",
        "APIHUB_KAFKA__RESPONSE_TOPIC": f"n{unique}.responses",
        "APIHUB_KAFKA__DLQ_TOPIC": f"n{unique}.requests.dlq",
        "APIHUB_KAFKA__EVENTS_TOPIC": f"n{unique}.events",
        **{f"APIHUB_TOPICS__{field.upper()}": f"n{unique}.{field}" for field in WorkerTopics.model_fields},
        "APIHUB_KAFKA__CALLER_TOPICS": f'{{"n{unique}.requests.java": "java-{unique}"}}',
    }
    for name, value in renamed.items():
        monkeypatch.setenv(name, value)

    assert cli.main(["topics", "ensure", "--bootstrap-servers", services.kafka_bootstrap]) == 0

    names = {value for name, value in renamed.items() if name != "APIHUB_KAFKA__CALLER_TOPICS"}
    names.add(f"n{unique}.requests.java")
    created = {line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("created")}
    assert created == names
    declared = {spec.name: spec.partitions for spec in load_topics()}
    partitions = asyncio.run(_partitions(services.kafka_bootstrap, names))
    assert partitions[f"n{unique}.candles"] == declared["market.candles"]
    requests = declared["api.requests"]
    assert partitions[f"n{unique}.requests.java"] == partitions[f"n{unique}.requests"] == requests


async def _partitions(bootstrap: str, names: set[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(sorted(names))}
    finally:
        await admin.close()
