"""The soak's own stack: Kafka, Redis, sandbox, gateway, three workers and the feed, each a child process.

Nothing here touches the shared local stack (``ops/stack.sh``, ports 19092/16379, pid files under
``.local/<component>/``): every port is a free loopback port picked at start, every file lives under the
run's directory (``.local/soak/<run>/``), and ``stop`` signals only the children this object started, by
their pids. The broker runs from the jars ``ops/stack.sh`` resolves (``kafka_ensure_jars``), configured as
the local stack's broker is (KRaft, one node); Redis persists as compose's does (append-only, fsync every
second). Start order: Kafka, Redis, topics, sandbox, gateway, workers, feed; stop order the reverse.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests import processes
from tests.processes import Child, apihub_argv, free_port
from tests.soak import profile
from tests.soak.profile import WORKERS, Addresses

REPO = profile.REPO
KAFKA_LIBS = REPO / ".local" / "kafka" / "libs"
KAFKA_HEAP = ("-Xmx512m", "-Xms256m")  # as ops/stack.sh's broker
KAFKA_READY_S = 120.0
SERVICE_READY_S = 90.0
REDIS_READY_S = 30.0
FEED_SETTLE_S = 3.0
STOP_S = 30.0

#: The progress printer: ``say("kafka: ready")``.
Say = Callable[[str], None]


def kafka_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """``server.properties`` of a one-node KRaft broker on loopback, as ops/stack.sh writes it."""
    host = "127.0.0.1"
    return f"""\
# Written by tests/soak/stack.py for one soak run.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""


def cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def java_argv(kafka_dir: Path, *main: str) -> list[str]:
    """A JVM on the Kafka jars running ``main`` (a class and its arguments)."""
    return [
        "java",
        *KAFKA_HEAP,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={kafka_dir / 'logs'}",
        f"-Dlog4j2.configurationFile={REPO / 'ops' / 'kafka' / 'log4j2.properties'}",
        "-cp",
        f"{KAFKA_LIBS}/*",
        *main,
    ]


@dataclass
class SoakStack:
    """The run's processes by name (``kafka``, ``redis``, ``sandbox``, ``gateway``, the workers, ``feed``)."""

    run_dir: Path
    keep_data: bool = False
    children: dict[str, Child] = field(default_factory=dict)
    changed_settings: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=profile.fake_keys)
    addresses: Addresses | None = None

    @property
    def log_dir(self) -> Path:
        """Where every child's output goes."""
        return self.run_dir / "logs"

    def pids(self) -> dict[str, int]:
        """Pid of every child still running, by name."""
        return {name: child.pid for name, child in self.children.items() if child.running}

    def exited(self) -> list[str]:
        """``name (pid N) exited with C`` for every child that is no longer running."""
        return [
            f"{child.name} (pid {child.pid}) exited with {child.proc.returncode}"
            for child in self.children.values()
            if not child.running
        ]

    async def start(self, say: Say) -> Addresses:
        """Start everything in order; on any failure, stop what was started and re-raise."""
        ports = {name: free_port() for name in WORKERS}
        self.addresses = Addresses(
            kafka=f"127.0.0.1:{free_port()}",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            sandbox_url=f"http://127.0.0.1:{free_port()}",
            gateway_metrics_port=free_port(),
            worker_health_ports=ports,
        )
        try:
            await self._start_kafka(say)
            await self._start_redis(say)
            await self._ensure_topics(say)
            await self._start_apps(say)
        except BaseException:
            await self.stop(say)
            raise
        return self.addresses

    async def _start_kafka(self, say: Say) -> None:
        assert self.addresses is not None
        port = int(self.addresses.kafka.rsplit(":", 1)[1])
        kafka_dir = self.run_dir / "kafka"
        (kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
        ensure = f"source {REPO / 'ops' / 'kafka' / 'common.sh'} && kafka_ensure_jars"
        await asyncio.to_thread(subprocess.run, ["bash", "-c", ensure], check=True, cwd=REPO, timeout=900)
        props = kafka_dir / "server.properties"
        props.write_text(kafka_properties(kafka_dir / "data", port, free_port()))
        fmt = java_argv(kafka_dir, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props))
        with (self.log_dir / "kafka.log").open("ab") as log:
            await asyncio.to_thread(
                subprocess.run, fmt, check=True, cwd=REPO, stdout=log, stderr=log, timeout=120
            )
        say(f"kafka: starting on {self.addresses.kafka}")
        child = await processes.start(
            "kafka", java_argv(kafka_dir, "kafka.Kafka", str(props)), log_path=self.log_dir / "kafka.log"
        )
        self.children["kafka"] = child
        wait = [sys.executable, str(REPO / "ops" / "wait_kafka.py"), "--bootstrap", self.addresses.kafka]
        wait += ["--timeout", str(KAFKA_READY_S), "--pid", str(child.pid), "--quiet"]
        done = await asyncio.to_thread(subprocess.run, wait, cwd=REPO, timeout=KAFKA_READY_S + 30)
        if done.returncode != 0:
            raise RuntimeError(
                f"kafka not ready: {child.describe_exit() if not child.running else 'timeout'}"
            )

    async def _start_redis(self, say: Say) -> None:
        assert self.addresses is not None
        port = self.addresses.redis_url.rsplit(":", 1)[1].split("/")[0]
        redis_dir = self.run_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: run `make up` once (it installs it) or apt-get it")
        # compose's persistence (append-only, fsync every second, snapshots), no config file.
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", port, "--daemonize", "no"]
        argv += ["--protected-mode", "yes", "--dir", str(redis_dir), "--appendonly", "yes"]
        argv += ["--appendfsync", "everysec", "--save", "60 1000"]
        say(f"redis: starting on 127.0.0.1:{port}")
        child = await processes.start("redis", argv, log_path=self.log_dir / "redis.log")
        self.children["redis"] = child
        redis = Redis.from_url(self.addresses.redis_url)
        try:
            async with asyncio.timeout(REDIS_READY_S):
                while True:
                    if not child.running:
                        raise RuntimeError(child.describe_exit())
                    with contextlib.suppress(OSError, RedisError):
                        if await redis.ping():
                            return
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise RuntimeError(f"redis not ready within {REDIS_READY_S:.0f} s") from None
        finally:
            await redis.aclose()

    async def _ensure_topics(self, say: Say) -> None:
        assert self.addresses is not None
        argv = apihub_argv("topics", "ensure", "--bootstrap-servers", self.addresses.kafka)
        with (self.log_dir / "topics.log").open("ab") as log:
            done = await asyncio.to_thread(
                subprocess.run, argv, cwd=REPO, stdout=log, stderr=log, timeout=120, env=processes.clean_env()
            )
        if done.returncode != 0:
            raise RuntimeError(f"apihub topics ensure failed; see {self.log_dir / 'topics.log'}")
        say("topics: ensured")

    async def _start_apps(self, say: Say) -> None:
        assert self.addresses is not None
        a = self.addresses
        port = a.sandbox_url.rsplit(":", 1)[1]
        self.children["sandbox"] = await processes.start(
            "sandbox",
            apihub_argv("sandbox", "--host", "127.0.0.1", "--port", port),
            env=profile.clock_env(),
            log_path=self.log_dir / "sandbox.log",
            ready_url=f"{a.sandbox_url}/healthz",
            ready_timeout_s=SERVICE_READY_S,
        )
        say(f"sandbox: ready on {a.sandbox_url}")
        prod = profile.parse_env_file(profile.PROD_ENV_FILE.read_text())
        env, self.changed_settings = profile.gateway_env(prod, a, self.keys)
        self.children["gateway"] = await processes.start(
            "gateway",
            apihub_argv("gateway"),
            env=env,
            log_path=self.log_dir / "gateway.log",
            ready_url=f"http://127.0.0.1:{a.gateway_metrics_port}/readyz",
            ready_timeout_s=SERVICE_READY_S,
        )
        say(f"gateway: ready, metrics on http://127.0.0.1:{a.gateway_metrics_port}")
        for name in WORKERS:
            health = a.worker_health_ports[name]
            self.children[name] = await processes.start(
                name,
                apihub_argv("worker", name),
                env=profile.worker_env(name, a),
                log_path=self.log_dir / f"{name}.log",
                ready_url=f"http://127.0.0.1:{health}/readyz",
                ready_timeout_s=SERVICE_READY_S,
            )
            say(f"{name}: ready, health on http://127.0.0.1:{health}")
        feed = await processes.start(
            "feed",
            apihub_argv("feed", "--bootstrap-servers", a.kafka),
            env=profile.feed_env(),
            log_path=self.log_dir / "feed.log",
        )
        self.children["feed"] = feed
        await asyncio.sleep(FEED_SETTLE_S)
        if not feed.running:
            raise RuntimeError(feed.describe_exit())
        say(f"feed: following the clock from {profile.CLOCK_START_KST} KST (pid {feed.pid})")

    async def stop(self, say: Say) -> None:
        """Stop every child in the reverse order of start (SIGTERM, SIGKILL after ``STOP_S``); then drop
        the broker's and Redis's data unless ``keep_data``."""
        for name in reversed(list(self.children)):
            child = self.children[name]
            if child.running:
                code = await child.stop(STOP_S)
                say(f"{name}: stopped (pid {child.pid}, exit {code})")
        if not self.keep_data:
            for data in (self.run_dir / "kafka" / "data", self.run_dir / "redis"):
                shutil.rmtree(data, ignore_errors=True)
