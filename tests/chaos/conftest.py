"""Fixtures of the fault suite: the integration suite's (topics, sandbox, gateway settings) plus markers.

Every test under ``tests/chaos/`` is marked ``chaos`` (``make chaos`` selects them, ``make test`` leaves them
out) and ``integration`` (real Kafka, Redis and sandbox, so ``-m "not integration"`` leaves them out too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import gateway_settings, sandbox_url, topics

__all__ = ["gateway_settings", "sandbox_url", "topics"]  # fixtures, re-exported for this directory

CHAOS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fault suite's tests ``chaos`` and ``integration`` (by this directory, wherever the checkout
    is: a clone in a folder named ``chaos`` must not change what is marked)."""
    for item in items:
        if item.path.resolve().is_relative_to(CHAOS_DIR):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)
