"""One worker process's wiring (``run_worker``) on an in-memory Kafka, and the fleet's refusals."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest

from hubclient import transport as transport_module
from services.settings import WorkerSettings
from services.worker import runtime as runtime_module
from services.worker.fleet import WorkerFleet
from services.worker.main import WORKERS, run_worker
from tests.processes import free_port
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, factory


async def test_recovery_worker_starts_ready_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker joins its task topic, says ready on ``/readyz`` and closes every client on stop."""
    port = free_port()
    settings = WorkerSettings(health_port=port, instance_id="unit")
    cluster = FakeCluster({settings.topics.recovery_tasks: 1, "api.responses": 1, "api.requests": 1})
    consumers: list[FakeConsumer] = []
    producers: list[FakeProducer] = []
    for module in (transport_module, runtime_module):
        monkeypatch.setattr(module, "AIOKafkaConsumer", factory(cluster, FakeConsumer, consumers))
        monkeypatch.setattr(module, "AIOKafkaProducer", factory(cluster, FakeProducer, producers))
    monkeypatch.setattr(runtime_module, "POLL_MS", 20)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker("recovery-worker", settings, stop))
    async with asyncio.timeout(10):
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.02)
    assert any(c.subscribed == [settings.topics.recovery_tasks] for c in consumers)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert consumers and all(c.stopped for c in consumers)
    assert producers and all(p.stopped for p in producers)
    assert any(p.config.get("transactional_id") == "recovery-worker.unit" for p in producers)


async def test_fleet_knows_only_the_three_workers(tmp_path: Path) -> None:
    """Starting an unknown worker is refused, naming the known ones; logs go under the fleet's prefix."""
    fleet = WorkerFleet({}, log_dir=tmp_path, prefix="demo-x", group_suffix=".x")
    with pytest.raises(ValueError, match="no worker named 'nope'; known: history-collector"):
        await fleet.start("nope")
    assert fleet.log_path("recovery-worker") == tmp_path / "demo-x-recovery-worker.log"
    assert set(WORKERS) == {"history-collector", "verification-worker", "recovery-worker"}
    await fleet.stop()  # nothing started: nothing to stop
