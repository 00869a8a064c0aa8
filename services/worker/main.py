"""``apihub worker NAME``: one worker process, from settings to a running task loop.

``WORKERS`` names the three workers, the module whose ``build(settings, hub)`` makes each one's handler
and the default port of its ``/healthz``, ``/readyz`` and ``/metrics``. The process talks to the brokers
only through ``hubclient`` (caller = the worker's name); it holds no token, limiter or HTTP client.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass

from hubclient import HubClient
from services.kafka_client import client_kwargs
from services.logs import log_event
from services.settings import WorkerSettings
from services.worker.health import HealthServer
from services.worker.runtime import TaskLoop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerKind:
    """Where a worker's code lives and where its health endpoints listen by default."""

    module: str
    health_port: int


WORKERS = {
    "history-collector": WorkerKind("services.history.worker", 18091),
    "verification-worker": WorkerKind("services.verification.worker", 18092),
    "recovery-worker": WorkerKind("services.recovery.worker", 18093),
}


async def run_worker(name: str, settings: WorkerSettings, stop: asyncio.Event) -> None:
    """Run worker ``name`` until ``stop`` is set."""
    kind = WORKERS[name]
    build = importlib.import_module(kind.module).build
    kafka = settings.kafka
    hub = HubClient.connect(
        kafka.bootstrap_servers,
        caller=name,
        request_topic=kafka.request_topic,
        reply_topic=kafka.response_topic,
        default_timeout_s=settings.call_timeout_s,
        client_options=client_kwargs(kafka),
    )
    handler = build(settings, hub)
    loop = TaskLoop(handler, settings)
    port = kind.health_port if settings.health_port is None else settings.health_port
    health = HealthServer(settings.health_host, port, lambda: loop.ready)
    await health.start()
    log_event(logger, "worker.health", worker=name, port=health.port)
    try:
        await hub.start()
        await handler.start()
        await loop.start()
        await loop.run(stop)
    finally:
        await loop.stop()
        await handler.stop()
        await hub.stop()
        await health.stop()
        log_event(logger, "worker.stopped", worker=name, topic=handler.task_topic, group=loop.group_id)
