"""Fixtures of the fault suite: the integration suite's (topics, sandbox, gateway settings) plus markers.

Every test under ``tests/chaos/`` is marked ``chaos`` (``make chaos`` selects them, ``make test`` leaves them
out) and ``integration`` (real Kafka, Redis and sandbox, so ``-m "not integration"`` leaves them out too).
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import gateway_settings, sandbox_url, topics

__all__ = ["gateway_settings", "sandbox_url", "topics"]  # fixtures, re-exported for this directory

CHAOS_DIR = "chaos"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fault suite's tests ``chaos`` and ``integration``."""
    for item in items:
        parts = item.path.parts
        if CHAOS_DIR in parts and "tests" in parts and parts.index(CHAOS_DIR) == parts.index("tests") + 1:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)
