"""Fixtures of the sandbox conformance suite: a real aiohttp test server per test, frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.sandbox.app import create_app
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import STATE
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox, SandboxFactory


@pytest.fixture
async def make_sandbox() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes with setting overrides (frozen clock at SESSION_NOW unless overridden)."""
    clients: list[TestClient[Any, Any]] = []

    async def factory(**overrides: Any) -> Sandbox:
        values: dict[str, Any] = {"clock_start": SESSION_NOW, "clock_rate": 0.0, **overrides}
        settings = SandboxSettings(**values)
        app = create_app(settings)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Sandbox(client, app[STATE])

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A sandbox with default settings and a frozen clock at SESSION_NOW."""
    return await make_sandbox()
