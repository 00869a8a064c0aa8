"""The topics ``apihub topics ensure`` declares come under the names the settings give them."""

from __future__ import annotations

import os

import pytest

from services.settings import ClientSettings
from services.topics import load_topics


@pytest.fixture(autouse=True)
def _declared_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """No topic renamed by the environment the tests run in."""
    for name in list(os.environ):
        kafka_topic = name.startswith("APIHUB_KAFKA__") and name.endswith("_TOPIC")
        if kafka_topic or name.startswith("APIHUB_TOPICS__"):
            monkeypatch.delenv(name)


def test_every_declared_topic_has_its_setting() -> None:
    """Each topic of ``schemas/topics.yaml`` is named by one setting, which defaults to the declared name."""
    assert ClientSettings().topic_names() == {spec.name: spec.name for spec in load_topics()}


def test_renamed_topics_keep_their_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A renamed topic keeps its declared partitions and policy; the others keep their names."""
    monkeypatch.setenv("APIHUB_KAFKA__RESPONSE_TOPIC", "desk.responses")
    monkeypatch.setenv("APIHUB_TOPICS__HISTORY_PROGRESS", "desk.history.progress")
    specs = {s.name: s for s in load_topics(rename=ClientSettings().topic_names())}
    declared = {s.name: s for s in load_topics()}
    assert "api.responses" not in specs and "history.progress" not in specs
    assert specs["desk.responses"].partitions == declared["api.responses"].partitions
    assert specs["desk.history.progress"].config == declared["history.progress"].config  # compacted
    assert specs["api.requests"] == declared["api.requests"]
