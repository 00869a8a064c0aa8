"""One sample of everything the soak watches, as a JSON-ready dict.

Sources: ``/proc/<pid>/status`` (``VmRSS`` of every process, KiB); the gateway's ``/metrics`` (consumer
lag, terminal responses by caller and status, pacing refusals by reason, upstream calls by outcome, token
refreshes, dead letters, queue depth); each worker's ``/metrics`` (tasks by outcome, retries); the
workers' consumer groups (committed offsets against the task topics' end offsets; a partition whose last
record is a transaction marker counts one); the sandbox referee (``/_sandbox/stats``: arrivals, the most in
any sliding second, over-limit arrivals per provider, limit classes included); Redis (``used_memory``,
keys); the load generator's tally. A source that does not answer gives ``None`` in its place and a line in
``errors``, so one slow endpoint never stops the sampling.

The parsers (``vmrss_kib``, ``metric_sums``, ``referee_summary``) are pure and tested on fixed text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from services.topics import load_topics
from tests.soak.profile import WORKERS

HTTP_TIMEOUT_S = 4.0
#: Each worker's consumer group (its name, the default) and the topic it reads.
WORKER_TOPICS = {
    "history-collector": "history.jobs",
    "verification-worker": "verification.tasks",
    "recovery-worker": "recovery.tasks",
}
REFEREE_ENVIRONMENTS = {"KIS": "kis/real", "KIWOOM": "kiwoom/real"}


def vmrss_kib(status_text: str) -> int | None:
    """``VmRSS`` in KiB from the text of ``/proc/<pid>/status`` (None without the line)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB, None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return vmrss_kib(status.read())
    except OSError:
        return None


def metric_sums(text: str, name: str, by: tuple[str, ...] = ()) -> dict[str, float]:
    """Sum of the samples called ``name`` in Prometheus text, grouped by the labels ``by`` (joined with
    ``/``; ``""`` when ``by`` is empty)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            key = "/".join(sample.labels.get(label, "") for label in by)
            out[key] = out.get(key, 0.0) + sample.value
    return out


def referee_summary(stats: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per provider (``KIS``, ``KIWOOM``): the referee's arrivals, tokens issued, the most arrivals in any
    sliding second of one key and its limit, and over-limit arrivals (the key's and its classes')."""
    out = {}
    environments = stats.get("environments", {})
    for provider, env_id in REFEREE_ENVIRONMENTS.items():
        env = environments.get(env_id, {})
        classes = env.get("classes", {})
        out[provider] = {
            "requests": int(env.get("requests", 0)),
            "tokens_issued": int(env.get("tokens_issued", 0)),
            "max_in_window": int(env.get("max_in_window", 0)),
            "rate_per_s": int(env.get("rate_per_s", 0)),
            "over_limit": int(env.get("over_limit", 0)),
            "class_over_limit": sum(int(c.get("over_limit", 0)) for c in classes.values()),
        }
    return out


def loop_lag(stats: Mapping[str, Any]) -> dict[str, float]:
    """The sandbox's own event-loop stalls (``max_ms``, ``over_20ms``, ``over_50ms``): a stall delays the
    count of requests already at its socket and then counts them together, so an over-limit arrival that
    coincides with one may be the stand-in's, not the hub's."""
    lag = stats.get("loop_lag", {})
    return {key: float(lag.get(key, 0)) for key in ("max_ms", "over_20ms", "over_50ms")}


def gateway_figures(text: str) -> dict[str, Any]:
    """The gateway's numbers the soak follows, from its ``/metrics`` text."""
    return {
        "consumer_lag": sum(metric_sums(text, "apihub_consumer_lag").values()),
        "queue_depth": sum(metric_sums(text, "apihub_queue_depth").values()),
        "responses": metric_sums(text, "apihub_requests_total", ("caller", "status")),
        "rejections": metric_sums(text, "apihub_limiter_rejections_total", ("provider", "reason")),
        "upstream": metric_sums(text, "apihub_upstream_calls_total", ("provider", "outcome")),
        "tokens": metric_sums(text, "apihub_token_refreshes_total", ("provider", "result")),
        "dlq": metric_sums(text, "apihub_dlq_messages_total", ("reason",)),
        "late": sum(metric_sums(text, "apihub_answered_after_deadline_total").values()),
        "jitter_s": metric_sums(text, "apihub_pacing_jitter_seconds", ("domain",)),
        "shared_cache_bytes": sum(metric_sums(text, "apihub_shared_cache_bytes").values()),
    }


def worker_figures(text: str) -> dict[str, Any]:
    """One worker's task outcomes and retries, from its ``/metrics`` text."""
    return {
        "tasks": metric_sums(text, "apihub_worker_tasks_total", ("outcome",)),
        "retries": metric_sums(text, "apihub_worker_retries_total", ("reason",)),
    }


class Sampler:
    """Reads every source once per ``take``; owns its HTTP session, admin client, offsets reader and Redis."""

    def __init__(
        self,
        *,
        kafka: str,
        redis_url: str,
        sandbox_url: str,
        gateway_url: str,
        worker_urls: Mapping[str, str],
    ) -> None:
        self._kafka = kafka
        self._sandbox_url = sandbox_url
        self._gateway_url = gateway_url
        self._worker_urls = dict(worker_urls)
        self._redis = Redis.from_url(redis_url)
        self._session: aiohttp.ClientSession | None = None
        self._admin = AIOKafkaAdminClient(bootstrap_servers=kafka, client_id="soak-sampler")
        self._offsets = AIOKafkaConsumer(bootstrap_servers=kafka, client_id="soak-offsets", group_id=None)
        partitions = {spec.name: spec.partitions for spec in load_topics()}
        self._partitions = {
            topic: [TopicPartition(topic, p) for p in range(partitions[topic])]
            for topic in WORKER_TOPICS.values()
        }

    async def start(self) -> None:
        """Connect to every source."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        await self._admin.start()
        await self._offsets.start()

    async def stop(self) -> None:
        """Disconnect (best effort)."""
        if self._session is not None:
            await self._session.close()
        await self._admin.close()
        await self._offsets.stop()
        await self._redis.aclose()

    async def _text(self, url: str) -> str:
        assert self._session is not None, "Sampler.start() first"
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def _json(self, url: str) -> Any:
        assert self._session is not None, "Sampler.start() first"
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def clock_now_iso(self) -> str:
        """The sandbox clock's now, ISO 8601 with its offset."""
        body = await self._json(f"{self._sandbox_url}/_sandbox/clock")
        return str(body["now"])

    async def group_lags(self) -> dict[str, int]:
        """Records not yet committed by each worker's group, by worker."""
        out = {}
        for worker, topic in WORKER_TOPICS.items():
            tps = self._partitions[topic]
            ends = await self._offsets.end_offsets(tps)
            committed = await self._admin.list_consumer_group_offsets(worker, partitions=tps)
            lag = 0
            for tp in tps:
                done = committed.get(tp)
                offset = done.offset if done is not None and done.offset >= 0 else 0
                lag += max(0, ends[tp] - offset)
            out[worker] = lag
        return out

    async def redis_figures(self) -> dict[str, int]:
        """Redis's ``used_memory`` (bytes) and key count."""
        info = await self._redis.info("memory")
        return {"used_memory": int(info["used_memory"]), "keys": int(await self._redis.dbsize())}

    async def take(self, t_s: float, pids: Mapping[str, int], load: Mapping[str, Any]) -> dict[str, Any]:
        """One sample at ``t_s`` seconds into the run."""
        errors: list[str] = []

        async def guarded(label: str, work: Awaitable[Any]) -> Any:
            try:
                return await asyncio.wait_for(work, HTTP_TIMEOUT_S + 1)
            except Exception as exc:  # one failing source must not stop the sample
                errors.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                return None

        async def worker(name: str) -> dict[str, Any]:
            return worker_figures(await self._text(f"{self._worker_urls[name]}/metrics"))

        async def gateway() -> dict[str, Any]:
            return gateway_figures(await self._text(f"{self._gateway_url}/metrics"))

        async def referee_and_lag() -> tuple[dict[str, Any], dict[str, float]]:
            stats = await self._json(f"{self._sandbox_url}/_sandbox/stats")
            return referee_summary(stats), loop_lag(stats)

        labels = ["gateway", "referee", "group_lag", "redis", *WORKERS]
        results = await asyncio.gather(
            guarded("gateway", gateway()),
            guarded("referee", referee_and_lag()),
            guarded("group_lag", self.group_lags()),
            guarded("redis", self.redis_figures()),
            *(guarded(name, worker(name)) for name in WORKERS),
        )
        found = dict(zip(labels, results, strict=True))
        referee, sandbox_lag = found["referee"] or (None, None)
        return {
            "t_s": round(t_s, 2),
            "wall": time.strftime("%H:%M:%S"),
            "rss_kib": {name: rss_kib(pid) for name, pid in pids.items()},
            "gateway": found["gateway"],
            "workers": {name: found[name] for name in WORKERS},
            "group_lag": found["group_lag"],
            "referee": referee,
            "sandbox_loop_lag": sandbox_lag,
            "redis": found["redis"],
            "load": dict(load),
            "errors": errors,
        }
