"""What every benchmark needs: the local stack, private topics and Redis keys, a sandbox process, gateway
processes, the referee, a direct KIS caller for the baselines, open-loop load and percentiles.

Every process the benchmarks start is their own child, found by its pid and stopped in a ``finally``; every
loop is bounded in count and in time. Logs of the sandbox and gateway processes go to ``.local/bench/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from hubclient.catalog import lookup
from services.sandbox.referee import appkey_label
from services.topics import TopicSpec, ensure_topics, load_topics
from tests import processes
from tests.params import PRICE
from tests.processes import GatewayProcess, clean_env, free_port

__all__ = ["GatewayProcess", "clean_env", "free_port"]  # re-exported for the benchmark modules

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / ".local" / "bench"
PRICE_TR = "FHKST01010100"
NO_LIMIT = 1_000_000  # "limits off": a rate no benchmark comes near


def log(message: str) -> None:
    """A progress line on stderr (stdout stays free for the summary)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the local stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Addresses of the local stack's Kafka and Redis."""

    kafka: str
    redis: str


def start_stack() -> Stack:
    """``ops/stack.sh up kafka redis`` (idempotent; leaves them running) and read ``.local/stack.env``."""
    subprocess.run(["bash", str(REPO / "ops" / "stack.sh"), "up", "kafka", "redis"], check=True, cwd=REPO)
    env: dict[str, str] = {}
    for line in (REPO / ".local" / "stack.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return Stack(env["KAFKA_BOOTSTRAP_SERVERS"], env["REDIS_URL"])


def fake_credentials() -> tuple[str, str]:
    """A fresh appkey and secret of KIS's shapes (36 and 180 characters): the referee counts per appkey."""
    return "PS" + secrets.token_hex(17), secrets.token_urlsafe(135)[:180]


@dataclass(frozen=True)
class Topics:
    """One benchmark phase's private request, response and dead-letter topics."""

    requests: str
    responses: str
    dlq: str
    group_id: str


@dataclass
class Bench:
    """One benchmark's private names (topics, Redis prefix, logs) and what to clean up afterwards."""

    stack: Stack
    name: str
    quick: bool
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created_topics: list[str] = field(default_factory=list)
    sandbox_pid: int | None = None

    @property
    def prefix(self) -> str:
        """Redis key prefix of this run."""
        return f"bench:{self.name}:{self.run_id}:"

    @property
    def log_dir(self) -> Path:
        """Where this run's process logs go."""
        path = BENCH_DIR / f"{self.name}-{self.run_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def topics(self, tag: str, *, request_partitions: int | None = None) -> Topics:
        """Private copies of the declared request, response and DLQ topics."""
        base = f"bench.{self.name}.{self.run_id}.{tag}"
        names = {
            "api.requests": f"{base}.requests",
            "api.responses": f"{base}.responses",
            "api.requests.dlq": f"{base}.dlq",
        }
        specs = [s for s in load_topics(rename=names) if s.name in names.values()]
        if request_partitions is not None:
            specs = [
                TopicSpec(s.name, request_partitions, s.replication_factor, s.config)
                if s.name == names["api.requests"]
                else s
                for s in specs
            ]
        await ensure_topics(self.stack.kafka, specs)
        self.created_topics += [s.name for s in specs]
        return Topics(names["api.requests"], names["api.responses"], names["api.requests.dlq"], f"gw-{base}")

    async def request_topics(self, tag: str, count: int) -> list[str]:
        """``count`` single-partition request topics (one per gateway that must serve its own requests)."""
        (declared,) = [s for s in load_topics() if s.name == "api.requests"]
        names = [f"bench.{self.name}.{self.run_id}.{tag}.{i}.requests" for i in range(count)]
        await ensure_topics(
            self.stack.kafka, [TopicSpec(n, 1, declared.replication_factor, declared.config) for n in names]
        )
        self.created_topics += names
        return names

    async def cleanup(self) -> None:
        """Delete this run's topics and Redis keys (best effort, bounded)."""
        if self.created_topics:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.kafka, client_id="apihub-bench")
            try:
                await admin.start()
                await asyncio.wait_for(admin.delete_topics(self.created_topics), 30)
            except Exception as exc:  # cleanup must not hide the result
                log(f"could not delete topics of {self.name}: {exc!r}")
            finally:
                await admin.close()
            self.created_topics = []
        redis = Redis.from_url(self.stack.redis)
        try:
            batch: list[bytes] = []
            async for key in redis.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await redis.delete(*batch)
                    batch = []
            if batch:
                await redis.delete(*batch)
        finally:
            await redis.aclose()


# --- processes ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sandbox(
    bench: Bench, *, faults: dict[str, object] | None = None, **settings: object
) -> AsyncIterator[str]:
    """``apihub sandbox`` as its own process (its own clock and core); ``settings`` become
    ``APIHUB_SANDBOX__<NAME>`` variables, e.g. ``kis_real_rate_per_s=NO_LIMIT``; ``faults`` are set through
    its admin API (refused loudly if the sandbox does not know one)."""
    async with processes.sandbox(
        settings=settings, faults=faults, log_path=bench.log_dir / "sandbox.log"
    ) as running:
        bench.sandbox_pid = running.child.pid
        try:
            yield running.url
        finally:
            bench.sandbox_pid = None


def gateway_env(
    bench: Bench,
    topics: Topics,
    sandbox_url: str,
    credentials: tuple[str, str],
    *,
    instance_id: str,
    metrics_port: int,
    **extra: object,
) -> dict[str, str]:
    """``APIHUB_*`` variables of one gateway; ``extra`` keys are written as ``APIHUB_<KEY>``."""
    appkey, appsecret = credentials
    kw_key, kw_secret = fake_credentials()
    env = {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bench.stack.kafka,
        "APIHUB_KAFKA__REQUEST_TOPIC": topics.requests,
        "APIHUB_KAFKA__RESPONSE_TOPIC": topics.responses,
        "APIHUB_KAFKA__DLQ_TOPIC": topics.dlq,
        "APIHUB_KAFKA__GROUP_ID": topics.group_id,
        "APIHUB_REDIS__URL": bench.stack.redis,
        "APIHUB_REDIS__KEY_PREFIX": bench.prefix,
        "APIHUB_KIS__BASE_URL": f"{sandbox_url}/kis/real",
        "APIHUB_KIS__APPKEY": appkey,
        "APIHUB_KIS__APPSECRET": appsecret,
        "APIHUB_KIWOOM__BASE_URL": f"{sandbox_url}/kiwoom/real",
        "APIHUB_KIWOOM__APPKEY": kw_key,
        "APIHUB_KIWOOM__SECRETKEY": kw_secret,
        "APIHUB_INSTANCE_ID": instance_id,
        "APIHUB_METRICS_HOST": "127.0.0.1",
        "APIHUB_METRICS_PORT": str(metrics_port),
    }
    env.update({f"APIHUB_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def pool_members(count: int, rate_per_s: float) -> list[dict[str, Any]]:
    """``count`` pool members with fresh keys (``APIHUB_KIS__CREDENTIALS`` entries)."""
    members = []
    for i in range(count):
        key, secret = fake_credentials()
        members.append({"name": f"m{i:02d}", "appkey": key, "appsecret": secret, "rate_per_s": rate_per_s})
    return members


def pool_gateway_env(
    bench: Bench,
    topics: Topics,
    sandbox_url: str,
    members: list[dict[str, Any]],
    *,
    instance_id: str,
    **extra: object,
) -> dict[str, str]:
    """``gateway_env`` of a gateway whose KIS side is the pool ``members`` alone (no key of its own)."""
    env = gateway_env(
        bench,
        topics,
        sandbox_url,
        fake_credentials(),
        instance_id=instance_id,
        metrics_port=free_port(),
        **extra,
    )
    del env["APIHUB_KIS__APPKEY"], env["APIHUB_KIS__APPSECRET"]
    env["APIHUB_KIS__CREDENTIALS"] = json.dumps(members)
    return env


async def per_key(
    session: aiohttp.ClientSession, url: str, members: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The referee's counters of every member's key, in member order."""
    async with session.get(f"{url}/_sandbox/stats") as resp:
        keys = (await resp.json())["environments"]["kis/real"]["appkeys"]
    return [dict(keys.get(appkey_label(m["appkey"]), {})) for m in members]


SESSION_TIMEOUT_MS = 10_000  # passed explicitly to gateway groups whose failover is measured


def pair_envs(
    bench: Bench, topics: Topics, sandbox_url: str, credentials: tuple[str, str], name: str
) -> dict[str, dict[str, str]]:
    """Environments of two gateways in one group (``<name>-a``, ``<name>-b``) by instance id, on one key,
    with the session timeout passed explicitly."""
    envs = {}
    for tag in ("a", "b"):
        instance_id = f"bench-{name}-{bench.run_id}-{tag}"
        envs[instance_id] = gateway_env(
            bench,
            topics,
            sandbox_url,
            credentials,
            instance_id=instance_id,
            metrics_port=free_port(),
            kafka__session_timeout_ms=SESSION_TIMEOUT_MS,
        )
    return envs


async def start_gateway(bench: Bench, env: dict[str, str], ready_timeout_s: float = 90) -> GatewayProcess:
    """Start one gateway process (log in the run's directory) and wait until ``/readyz`` says it consumes."""
    log_path = bench.log_dir / f"{env['APIHUB_INSTANCE_ID']}.log"
    return await processes.start_gateway(env, log_path=log_path, ready_timeout_s=ready_timeout_s)


@contextlib.asynccontextmanager
async def gateways(
    bench: Bench, envs: list[dict[str, str]], ready_timeout_s: float = 90
) -> AsyncIterator[list[GatewayProcess]]:
    """Start gateway processes all at once, yield them when every one is ready, stop them all after."""
    started = await asyncio.gather(
        *(start_gateway(bench, env, ready_timeout_s) for env in envs), return_exceptions=True
    )
    running = [g for g in started if isinstance(g, GatewayProcess)]
    try:
        failures = [g for g in started if isinstance(g, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(envs)} gateways did not start: {failures[0]!r}")
        yield running
    finally:
        await asyncio.gather(*(g.stop() for g in running))


class GatewayGroup:
    """Gateway processes that get killed and restarted (``pacing-kill``, ``failover``): every process ever
    started is remembered, and ``stop_all`` (call it in a ``finally``) stops those still running."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.current: dict[str, GatewayProcess] = {}
        self._all: list[GatewayProcess] = []

    async def start(self, env: dict[str, str], ready_timeout_s: float = 90) -> GatewayProcess:
        """Start a gateway under ``env`` (its ``APIHUB_INSTANCE_ID`` names it); wait until it is ready."""
        process = await processes.start_gateway(
            env,
            log_path=self.bench.log_dir / f"{env['APIHUB_INSTANCE_ID']}.log",
            ready_timeout_s=ready_timeout_s,
        )
        self._all.append(process)
        self.current[process.instance_id] = process
        return process

    async def spawn(self, env: dict[str, str]) -> tuple[GatewayProcess, float]:
        """Start one gateway without waiting for readiness; returns it and its ``time.monotonic()`` start."""
        process = await processes.start_gateway(
            env, log_path=self.bench.log_dir / f"{env['APIHUB_INSTANCE_ID']}.log", ready_timeout_s=None
        )
        self._all.append(process)
        self.current[process.instance_id] = process
        return process, process.child.started

    async def kill(self, instance_id: str) -> float:
        """SIGKILL the running process of ``instance_id``; returns the ``time.monotonic()`` of the signal."""
        process = self.current.pop(instance_id)
        killed_at = time.monotonic()
        await process.kill()
        return killed_at

    async def stop_all(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL)."""
        await asyncio.gather(*(p.stop() for p in self._all), return_exceptions=True)
        self.current.clear()


def busy_loop_argv(max_s: float) -> list[str]:
    """A Python child that keeps one core busy at normal priority for at most ``max_s`` seconds."""
    code = f"import time\nend = time.monotonic() + {max_s:.1f}\nwhile time.monotonic() < end:\n    pass\n"
    return [sys.executable, "-c", code]


@contextlib.asynccontextmanager
async def busy_cores(bench: Bench, count: int, max_s: float) -> AsyncIterator[list[int]]:
    """``count`` busy processes for the length of the block (each ends by itself after ``max_s`` at the
    latest, and is killed when the block ends); yields their pids."""
    children: list[processes.Child] = []
    try:
        for i in range(count):
            children.append(
                await processes.start(
                    f"busy-{i}", busy_loop_argv(max_s), log_path=bench.log_dir / f"busy-{i}.log"
                )
            )
        yield [c.pid for c in children]
    finally:
        await asyncio.gather(*(c.kill() for c in children), return_exceptions=True)


# --- observing ------------------------------------------------------------------------------------


async def referee(session: aiohttp.ClientSession, sandbox_url: str, appkey: str) -> dict[str, Any]:
    """The referee's counters for one KIS real appkey (empty before its first arrival)."""
    async with session.get(f"{sandbox_url}/_sandbox/stats") as resp:
        stats = await resp.json()
    counters: dict[str, Any] = stats["environments"]["kis/real"]["appkeys"].get(appkey_label(appkey), {})
    return counters


def accepted(counters: dict[str, Any]) -> int:
    """Arrivals the sandbox served inside its per-second limit (refused arrivals subtracted)."""
    return int(counters.get("window_requests", 0)) - int(counters.get("over_limit", 0))


@dataclass
class KeyWatch:
    """What the referee saw on one appkey during one load phase."""

    limit_per_s: float
    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    over_limit_seconds: int = 0
    samples: int = 0

    @property
    def accepted(self) -> int:
        """Calls the sandbox served within its limit during the phase."""
        return accepted(self.end) - accepted(self.start)

    @property
    def over_limit(self) -> int:
        """Arrivals over the limit during the phase (the sandbox refused them with EGW00201)."""
        return int(self.end.get("over_limit", 0)) - int(self.start.get("over_limit", 0))

    @property
    def arrivals(self) -> int:
        """Arrivals in the per-second window during the phase (refused ones included)."""
        return int(self.end.get("window_requests", 0)) - int(self.start.get("window_requests", 0))

    @property
    def jittered(self) -> int:
        """Arrivals the sandbox delayed with its arrival jitter during the phase."""
        end = int(self.end.get("faults", {}).get("arrival_jitter", 0))
        return end - int(self.start.get("faults", {}).get("arrival_jitter", 0))

    @property
    def max_in_window(self) -> int:
        """The largest count in any sliding one-second window on this key (whole life of the key)."""
        return int(self.end.get("max_in_window", 0))

    @property
    def utilisation(self) -> float:
        """Accepted calls over what the key allows in the phase."""
        return self.accepted / (self.limit_per_s * self.elapsed_s) if self.elapsed_s else 0.0


async def watch(
    session: aiohttp.ClientSession,
    url: str,
    appkey: str,
    duration_s: float,
    load: asyncio.Future[Any],
    limit_per_s: float,
    stop: asyncio.Event | None = None,
) -> KeyWatch:
    """Snapshot the key's counters when the load starts and ``duration_s`` later (or when ``stop`` is set,
    if sooner), sampling once a second in between (the one-second intervals in which over-limit arrivals
    appeared are counted); then wait for ``load`` to end."""
    result = KeyWatch(limit_per_s)
    result.start = await referee(session, url, appkey)
    started = time.monotonic()
    last_over = int(result.start.get("over_limit", 0))
    for _ in range(int(duration_s) + 5):  # bounded: one sample a second
        wait_s = max(0.0, min(1.0, started + duration_s - time.monotonic()))
        if stop is None:
            await asyncio.sleep(wait_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        counters = await referee(session, url, appkey)
        result.samples += 1
        over = int(counters.get("over_limit", 0))
        result.over_limit_seconds += int(over > last_over)
        last_over = over
        if time.monotonic() >= started + duration_s or (stop is not None and stop.is_set()):
            result.end = counters
            break
    result.elapsed_s = time.monotonic() - started
    with contextlib.suppress(asyncio.CancelledError):
        await load
    return result


async def metric_value(session: aiohttp.ClientSession, metrics_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, from a gateway's /metrics."""
    async with session.get(f"{metrics_url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def metric_or_nan(session: aiohttp.ClientSession, metrics_url: str, name: str, **labels: str) -> float:
    """Like ``metric_value`` but NaN when the gateway exports no such sample or does not answer (a metric
    that a version of the gateway may not have yet)."""
    try:
        async with session.get(f"{metrics_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return math.nan
    found, total = False, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found, total = True, total + sample.value
    return total if found else math.nan


def stack_pids() -> dict[str, int]:
    """Pids of the local stack's Kafka and Redis, from their pid files (only read, never signalled)."""
    pids = {}
    for name in ("kafka", "redis"):
        with contextlib.suppress(OSError, ValueError):
            pids[name] = int((REPO / ".local" / name / f"{name}.pid").read_text().strip())
    return pids


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's main thread (its event loop) has spent runnable but waiting for a CPU
    (``/proc/<pid>/task/<pid>/schedstat``; 0 if it is gone or the kernel does not keep it)."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``, and how long their main
    threads waited for a CPU meanwhile."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, tuple[float, float]] = {}
        self.used_s: dict[str, float] = {}
        self.waited_s: dict[str, float] = {}
        self.wall_s = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._start = {name: (cpu_seconds(pid), run_queue_wait_s(pid)) for name, pid in self.pids.items()}
        self._t0 = time.monotonic()

    def stop(self) -> None:
        """Take the second reading."""
        self.wall_s = time.monotonic() - self._t0
        self.used_s = {name: cpu_seconds(pid) - self._start[name][0] for name, pid in self.pids.items()}
        self.waited_s = {
            name: run_queue_wait_s(pid) - self._start[name][1] for name, pid in self.pids.items()
        }

    def waited(self) -> str:
        """Share of the wall time each main thread spent waiting for a CPU (the host's contention)."""
        return ", ".join(
            f"{name} {waited / self.wall_s * 100:.1f} %" if self.wall_s else f"{name} -"
            for name, waited in self.waited_s.items()
        )

    def per_item_ms(self, items: int) -> str:
        """``name x.x ms`` per item, for each process, largest first."""
        ordered = sorted(self.used_s.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {used / max(items, 1) * 1000:.2f}" for name, used in ordered)

    def busy(self) -> str:
        """Share of the machine's cores each process kept busy, and the sum."""
        cores = os.cpu_count() or 1
        ordered = sorted(self.used_s.items(), key=lambda kv: -kv[1])
        parts = [f"{name} {used / self.wall_s * 100:.0f} %" for name, used in ordered]
        total = sum(self.used_s.values()) / (self.wall_s * cores) * 100 if self.wall_s else 0.0
        return f"{', '.join(parts)} (of one core each); together {total:.0f} % of {cores} cores"


# --- direct calls (the baselines) -----------------------------------------------------------------


class DirectKis:
    """A worker's own KIS client, as before the hub: its own token, its own HTTP session."""

    def __init__(self, session: aiohttp.ClientSession, sandbox_url: str, credentials: tuple[str, str]):
        self._session = session
        self._base = f"{sandbox_url}/kis/real"
        self.appkey, self._secret = credentials
        self.token: str | None = None
        spec = lookup("KIS", PRICE_TR)
        self._price_url = f"{self._base}{spec.path}"

    async def issue_token(self) -> tuple[int, str]:
        """``POST /oauth2/tokenP``; keeps the token when granted. Returns HTTP status and error code."""
        body = {"grant_type": "client_credentials", "appkey": self.appkey, "appsecret": self._secret}
        async with self._session.post(f"{self._base}/oauth2/tokenP", json=body) as resp:
            doc = await resp.json(content_type=None)
        if resp.status == 200 and doc.get("access_token"):
            self.token = str(doc["access_token"])
            return resp.status, ""
        return resp.status, str(doc.get("error_code") or doc.get("msg_cd") or "")

    async def price(self) -> tuple[int, str]:
        """One FHKST01010100 call; returns HTTP status and ``msg_cd``."""
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {self.token}",
            "appkey": self.appkey,
            "appsecret": self._secret,
            "tr_id": PRICE_TR,
            "custtype": "P",
        }
        async with self._session.get(self._price_url, headers=headers, params=PRICE) as resp:
            doc = await resp.json(content_type=None)
        return resp.status, str(doc.get("msg_cd") or "")


# --- load and statistics --------------------------------------------------------------------------


async def open_loop(
    rate_per_s: float,
    duration_s: float,
    fire: Callable[[int], Coroutine[Any, Any, None]],
    *,
    drain_timeout_s: float = 30,
    phase_s: float = 0.0,
    stop: asyncio.Event | None = None,
) -> float:
    """Start ``fire(i)`` at ``t0 + phase_s + i / rate_per_s`` for ``duration_s`` (open loop: arrivals do not
    wait for answers), or until ``stop`` is set, then wait (bounded) for the calls to end. Returns the
    seconds the arrivals took."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate_per_s * duration_s))
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time() + phase_s
    for i in range(count):
        delay = t0 + i / rate_per_s - loop.time()
        if stop is not None and stop.is_set():
            break
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    offered_s = loop.time() - t0
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=drain_timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    return offered_s


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def now_ms() -> float:
    """A monotonic clock in milliseconds, for latencies."""
    return time.perf_counter() * 1000
