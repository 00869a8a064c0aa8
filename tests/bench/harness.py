"""What every benchmark needs: the local stack, private topics and Redis keys, a sandbox process, gateway
processes, the referee, a direct KIS caller for the baselines, open-loop load and percentiles.

Every process the benchmarks start is their own child, found by its pid and stopped in a ``finally``; every
loop is bounded in count and in time. Logs of the sandbox and gateway processes go to ``.local/bench/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import socket
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
from services.topics import TopicSpec, ensure_topics, load_topics

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / ".local" / "bench"
PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any ``APIHUB_*`` the shell may carry, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIHUB_")}
    env.update(overrides)
    return env


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


async def wait_http_ok(url: str, timeout_s: float, proc: asyncio.subprocess.Process | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
        while True:
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"process for {url} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=REPO, env=env, stdout=sink, stderr=sink
        )


@contextlib.asynccontextmanager
async def sandbox(bench: Bench, **settings: object) -> AsyncIterator[str]:
    """``apihub sandbox`` as its own process (its own clock and core); ``settings`` become
    ``APIHUB_SANDBOX__<NAME>`` variables, e.g. ``kis_real_rate_per_s=NO_LIMIT``."""
    port = free_port()
    env = clean_env(**{f"APIHUB_SANDBOX__{k.upper()}": str(v) for k, v in settings.items()})
    args = ["-m", "services.cli", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    proc = await _spawn(args, env, bench.log_dir / "sandbox.log")
    url = f"http://127.0.0.1:{port}"
    bench.sandbox_pid = proc.pid
    try:
        await wait_http_ok(f"{url}/healthz", 30, proc)
        yield url
    finally:
        await stop_process(proc, 10)
        bench.sandbox_pid = None


@dataclass
class GatewayProcess:
    """A running ``apihub gateway`` process."""

    proc: asyncio.subprocess.Process
    instance_id: str
    metrics_url: str


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


async def start_gateway(bench: Bench, env: dict[str, str], ready_timeout_s: float = 90) -> GatewayProcess:
    """Start one gateway process and wait until ``/readyz`` says it consumes."""
    instance_id = env["APIHUB_INSTANCE_ID"]
    proc = await _spawn(
        ["-m", "services.cli", "gateway"], clean_env(**env), bench.log_dir / f"{instance_id}.log"
    )
    gateway = GatewayProcess(proc, instance_id, f"http://127.0.0.1:{env['APIHUB_METRICS_PORT']}")
    try:
        await wait_http_ok(f"{gateway.metrics_url}/readyz", ready_timeout_s, proc)
    except BaseException:
        await stop_process(proc, 10)
        raise
    return gateway


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
        await asyncio.gather(*(stop_process(g.proc) for g in running))


# --- observing ------------------------------------------------------------------------------------


async def referee(session: aiohttp.ClientSession, sandbox_url: str, appkey: str) -> dict[str, Any]:
    """The referee's counters for one KIS real appkey (empty before its first arrival)."""
    async with session.get(f"{sandbox_url}/_sandbox/stats") as resp:
        stats = await resp.json()
    counters: dict[str, Any] = stats["environments"]["kis/real"]["appkeys"].get(appkey, {})
    return counters


def accepted(counters: dict[str, Any]) -> int:
    """Arrivals the sandbox served inside its per-second limit (refused arrivals subtracted)."""
    return int(counters.get("window_requests", 0)) - int(counters.get("over_limit", 0))


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


class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self.used_s: dict[str, float] = {}
        self.wall_s = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._t0 = time.monotonic()

    def stop(self) -> None:
        """Take the second reading."""
        self.wall_s = time.monotonic() - self._t0
        self.used_s = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}

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
) -> float:
    """Start ``fire(i)`` at ``t0 + phase_s + i / rate_per_s`` for ``duration_s`` (open loop: arrivals do not
    wait for answers), then wait (bounded) for the calls to end. Returns the seconds the arrivals took."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate_per_s * duration_s))
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time() + phase_s
    for i in range(count):
        delay = t0 + i / rate_per_s - loop.time()
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
