"""The Grafana dashboard's every query against a real Prometheus scraping a real gateway and worker.

A gateway process (KIS slowed to 4 calls/s) and a history-collector process run on this test's topics; a
Prometheus (Debian's binary, the local stack's config with these targets, scraping every second, the alert
rules loaded) watches both. A short load through the hub covers what the panels show: another instance
holding the KIS token lock (contention), a burst that pacing refuses (deadline_unreachable), broker
refusals (business_error) from both brokers, and one history job. Then every panel's every query must
return at least one series, and every alert rule must evaluate without error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from hubclient import HubClient
from hubclient.market import KST
from hubclient.models import Provider, Status
from services.gateway.clock import SystemClock
from services.gateway.token_store import RedisTokenStore
from services.history.collect import make_job, publish
from services.settings import GatewaySettings, KafkaSettings, WorkerSettings, WorkerTopics
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey, free_port, gateway_env, private_worker_topics
from tests.params import distinct_price
from tests.unit.test_alert_rules import LOCAL_CONFIG, PROMETHEUS_DIR, find_tool
from tests.unit.test_dashboard import dashboard_queries

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
KIWOOM_DAILY = {"stk_cd": "005930", "base_dt": "20261127", "upd_stkpc_tp": "1"}
KIS_RATE_PER_S = 4.0
BURST = 16  # bulk requests at once with BURST_TIMEOUT_S: at 4/s the later ones cannot make it
BURST_TIMEOUT_S = 1.5
SCRAPE_INTERVAL = "1s"
QUERY_WAIT_S = 30.0  # for the scrapes after the load to reach every query


def prometheus_config(gateway_target: str, worker_target: str) -> dict[str, Any]:
    """ops/prometheus/prometheus-local.yml scraping these targets every second, with the repo's rules."""
    config: dict[str, Any] = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL
    )
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["gateway"]["static_configs"][0]["targets"] = [gateway_target]
    history = next(
        s for s in jobs["workers"]["static_configs"] if s["labels"]["service"] == "history-collector"
    )
    history["targets"] = [worker_target]
    jobs["workers"]["static_configs"] = [history]
    return config


@contextlib.asynccontextmanager
async def prometheus(directory: Path, gateway_target: str, worker_target: str) -> AsyncIterator[str]:
    """A Prometheus process on a free loopback port for the block; yields its base URL."""
    binary = find_tool("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(gateway_target, worker_target)))
    url = f"http://127.0.0.1:{free_port()}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    log_path = processes.LOG_DIR / f"prometheus-{uuid.uuid4().hex[:10]}.log"
    child = await processes.start("prometheus", argv, log_path=log_path, ready_url=f"{url}/-/ready")
    try:
        yield url
    finally:
        await child.stop(10)


async def instant_query(url: str, expr: str) -> list[dict[str, Any]]:
    """The series an instant query returns now; raises with Prometheus's error for an invalid query."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/api/v1/query", params={"query": expr}, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp,
    ):
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def rule_health(url: str) -> dict[str, tuple[str, str]]:
    """Rule name -> (health, last error) of every loaded rule."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/rules") as resp:
        body = await resp.json()
    return {
        rule["name"]: (rule["health"], rule.get("lastError", ""))
        for group in body["data"]["groups"]
        for rule in group["rules"]
    }


def worker_env(
    bootstrap: str, topics: Topics, worker_topics: WorkerTopics, group: str, port: int
) -> dict[str, str]:
    """The ``APIHUB_*`` environment of a history-collector on this test's topics and health port."""
    return {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "APIHUB_KAFKA__REQUEST_TOPIC": topics.requests,
        "APIHUB_KAFKA__RESPONSE_TOPIC": topics.responses,
        "APIHUB_TOPICS__HISTORY_JOBS": worker_topics.history_jobs,
        "APIHUB_TOPICS__HISTORY_PROGRESS": worker_topics.history_progress,
        "APIHUB_TOPICS__CANDLES": worker_topics.candles,
        "APIHUB_TOPICS__DLQ": worker_topics.dlq,
        "APIHUB_GROUP_ID": group,
        "APIHUB_INSTANCE_ID": group,
        "APIHUB_HEALTH_PORT": str(port),
        "APIHUB_TASK_DEADLINE_S": "60",
    }


async def hold_token_lock(services: Services, settings: GatewaySettings, hold_s: float) -> None:
    """Take the KIS token lock as another gateway instance would, for ``hold_s`` (it then expires)."""
    redis = Redis.from_url(services.redis_url)
    try:
        store = RedisTokenStore(
            redis,
            key_prefix=settings.redis.key_prefix,
            appkeys={Provider.KIS: appkey(settings)},
            clock=SystemClock(),
        )
        assert await store.acquire_lock(Provider.KIS, hold_s) is not None, "the lock was free"
    finally:
        await redis.aclose()


async def send_load(client: HubClient) -> None:
    """The calls the panels need: a KIS call that waits for the held lock, a bulk burst beyond the pace, and
    a served and a refused call per broker."""
    for _ in range(20):  # the gateway waits for the lock's holder, then may refuse until it can issue
        first = await client.submit("KIS", "FHKST01010100", PRICE, timeout=30)
        if first.status is Status.OK:
            break
        assert first.reason == "token_unavailable", first
        await asyncio.sleep(0.5)
    assert first.status is Status.OK, first
    burst = await asyncio.gather(
        *(
            client.submit("KIS", "FHKST01010100", distinct_price(), timeout=BURST_TIMEOUT_S, priority="bulk")
            for _ in range(BURST)
        )
    )
    assert {r.reason for r in burst if r.status is Status.REJECTED} == {"deadline_unreachable"}, burst
    refused = await client.submit("KIS", "FHKST01010100", {**PRICE, "FID_INPUT_ISCD": ""}, timeout=20)
    assert refused.reason == "business_error", refused
    served = await client.submit("KIWOOM", "ka10081", KIWOOM_DAILY, timeout=20)
    assert served.status is Status.OK, served
    unknown = await client.submit("KIWOOM", "ka10081", {**KIWOOM_DAILY, "stk_cd": "999999"}, timeout=20)
    assert unknown.status is Status.UPSTREAM_ERROR, unknown


async def wait_for_worker_task(url: str, timeout_s: float = 60) -> None:
    """Until the worker's /metrics counts a task done (bounded)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
            done = [
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "apihub_worker_tasks_total" and sample.labels.get("outcome") == "done"
            ]
            if done and done[0] >= 1:
                return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the history-collector finished no task within {timeout_s} s")


async def empty_queries(url: str) -> list[str]:
    """The dashboard queries that return no series, retried until none is empty or QUERY_WAIT_S passes."""
    pending = dashboard_queries()
    deadline = time.monotonic() + QUERY_WAIT_S
    while True:
        still = [q for q in pending if not await instant_query(url, q.resolved)]
        if not still or time.monotonic() > deadline:
            return [f"{q.panel} [{q.ref_id}]: {q.resolved}" for q in still]
        pending = still
        await asyncio.sleep(1)


@pytest.mark.timeout(300)
async def test_every_dashboard_panel_returns_series_from_a_real_prometheus(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, unique: str, tmp_path: Path
) -> None:
    """After the load, each query of each panel returns a series, and each alert rule evaluates cleanly."""
    worker_topics = await private_worker_topics(
        services.kafka_bootstrap, f"m{unique}", "history_jobs", "history_progress", "candles", "dlq"
    )
    gateway_environment = {**gateway_env(gateway_settings), "APIHUB_KIS__RATE_PER_S": str(KIS_RATE_PER_S)}
    worker_port = free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    environment = worker_env(
        services.kafka_bootstrap, topics, worker_topics, f"history-{unique}", worker_port
    )
    async with processes.gateway(
        gateway_environment, log_path=processes.LOG_DIR / f"gateway-m{unique}.log"
    ) as gw:
        worker = await processes.start(
            "history-collector",
            processes.apihub_argv("worker", "history-collector"),
            env=environment,
            log_path=processes.LOG_DIR / f"history-m{unique}.log",
            ready_url=f"{worker_url}/readyz",
        )
        try:
            async with prometheus(
                tmp_path, gw.metrics_url.removeprefix("http://"), f"127.0.0.1:{worker_port}"
            ) as url:
                client = HubClient.connect(
                    services.kafka_bootstrap,
                    caller="monitoring-test",
                    request_topic=topics.requests,
                    reply_topic=topics.responses,
                )
                async with client:
                    # held only now, with everything up: the first call must find it held (taken before
                    # the gateway's start, it expired during a slow start and nothing waited for it)
                    await hold_token_lock(services, gateway_settings, hold_s=2.0)
                    await send_load(client)
                day = datetime.now(KST).date() - timedelta(days=1)
                settings = WorkerSettings(
                    kafka=KafkaSettings(bootstrap_servers=services.kafka_bootstrap), topics=worker_topics
                )
                await publish(settings, make_job(["005930"], day, day, "1m", "KIS", timeout_s=60))
                await wait_for_worker_task(worker_url)
                assert (await gw.metric("apihub_lock_contention_total", provider="KIS") or 0) >= 1
                empty = await empty_queries(url)
                health = await rule_health(url)
        finally:
            await worker.stop()
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    assert health and all(state == "ok" for state, _ in health.values()), health
