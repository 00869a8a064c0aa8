"""Fixtures shared by the unit tests: an in-process sandbox with a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.sandbox.app import create_app
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import STATE
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A sandbox with its clock frozen mid-session."""
    app = create_app(SandboxSettings(clock_start=SESSION_NOW, clock_rate=0.0))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Sandbox(client, app[STATE])
    finally:
        await client.close()
