"""Topics on a cluster of three brokers get replication factor 3 and min.insync.replicas=2."""

from __future__ import annotations

from pathlib import Path

from services.topics import Replicated, TopicSpec, _drift, load_replicated, load_topics


def test_the_declaration_has_the_replicated_block() -> None:
    assert load_replicated() == Replicated(brokers=3, replication_factor=3, min_insync_replicas=2)


def test_a_single_node_keeps_the_declared_topics() -> None:
    policy = load_replicated()
    assert policy is not None
    for spec in load_topics():
        assert policy.apply(spec, live_brokers=1) == spec
        assert spec.replication_factor == 1 and "min.insync.replicas" not in spec.config


def test_three_brokers_replicate_every_topic_and_keep_its_config() -> None:
    policy = Replicated(brokers=3, replication_factor=3, min_insync_replicas=2)
    spec = TopicSpec("api.requests", 6, 1, {"cleanup.policy": "delete"})
    for live in (3, 5):
        assert policy.apply(spec, live) == TopicSpec(
            "api.requests", 6, 3, {"cleanup.policy": "delete", "min.insync.replicas": "2"}
        )


def test_a_file_without_the_block_has_no_policy(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("replication_factor: 1\ntopics: []\n")
    assert load_replicated(path) is None


def test_replication_drift_is_reported() -> None:
    spec = TopicSpec("t", 6, 3, {"min.insync.replicas": "2"})
    assert _drift(spec, (6, 3), {"min.insync.replicas": "2"}) == []
    assert _drift(spec, (6, 1), {"min.insync.replicas": "1"}) == [
        "replication factor 1, declared 3",
        "min.insync.replicas='1', declared '2'",
    ]
