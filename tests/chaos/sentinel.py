"""Redis behind Sentinel on loopback for the fault suite: one primary, one replica, three sentinels.

    async with sentinel_group(tmp_path) as group:
        settings.redis.sentinels = group.sentinels          # ["127.0.0.1:46390", ...]
        await group.kill_primary()                          # SIGKILL: the sentinels promote the replica
        await group.wait_failover(timeout_s=30)

Debian's ``redis-sentinel`` (installed with apt-get when missing and this runs as root, as ops/stack.sh does
for redis-server); each process is a child of the test with its config and log under ``tmp_path``, on the
suite's ports 46381-46392, stopped when the block ends. Sentinels judge a primary down after
``DOWN_AFTER_MS`` and need two of three to agree (quorum 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests import processes

MASTER = "apihub-chaos"
HOST = "127.0.0.1"
PRIMARY_PORT = 46381
REPLICA_PORT = 46382
SENTINEL_PORTS = (46390, 46391, 46392)
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
READY_TIMEOUT_S = 30.0


def ensure_sentinel_installed() -> str:
    """The ``redis-sentinel`` executable, installing Debian's package first when it is missing."""
    found = shutil.which("redis-sentinel")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-sentinel"],
            check=True,
            env=env,
            timeout=300,
        )
        found = shutil.which("redis-sentinel")
        if found:
            return found
    raise RuntimeError("redis-sentinel not found: apt-get install redis-sentinel (Debian) and run again")


def sentinel_conf(port: int, directory: Path) -> str:
    """A sentinel's config: watch the primary on loopback, a quorum of two, fast failure detection."""
    return (
        f"port {port}\nbind {HOST}\nprotected-mode no\ndaemonize no\ndir {directory}\n"
        f"sentinel monitor {MASTER} {HOST} {PRIMARY_PORT} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )


async def _redis_ping(port: int) -> bool:
    client = Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


@dataclass
class SentinelGroup:
    """The running primary, replica and sentinels; ``primary_port`` follows failovers."""

    directory: Path
    primary: processes.Child
    replica: processes.Child
    sentinel_children: list[processes.Child]
    primary_port: int = PRIMARY_PORT
    events: list[str] = field(default_factory=list)

    @property
    def sentinels(self) -> list[str]:
        """The sentinels as ``host:port`` (``RedisSettings.sentinels``)."""
        return [f"{HOST}:{port}" for port in SENTINEL_PORTS]

    async def master_address(self, sentinel_port: int = SENTINEL_PORTS[0]) -> tuple[str, int] | None:
        """What one sentinel says the primary is now (None when it cannot tell)."""
        client = Redis(host=HOST, port=sentinel_port, socket_timeout=1, socket_connect_timeout=1)
        try:
            answer: Any = await client.sentinel_get_master_addr_by_name(MASTER)
        except (RedisError, OSError):
            return None
        finally:
            await client.aclose()
        if not answer:
            return None
        host, port = answer
        return (host.decode() if isinstance(host, bytes) else str(host), int(port))

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every sentinel knows the primary, its replica and the two other sentinels."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all([await self._sentinel_sees_all(port) for port in SENTINEL_PORTS]):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the sentinels did not see primary, replica and each other in {timeout_s:.0f} s")

    async def _sentinel_sees_all(self, port: int) -> bool:
        client = Redis(
            host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        )
        try:
            state = await client.sentinel_master(MASTER)
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
        if not isinstance(state, dict):
            return False
        return int(state.get("num-slaves", 0)) >= 1 and int(state.get("num-other-sentinels", 0)) >= 2

    async def kill_primary(self) -> None:
        """SIGKILL the primary (it stays down)."""
        await self.primary.kill()
        self.events.append(f"primary on {self.primary_port} killed with SIGKILL")

    async def wait_failover(self, timeout_s: float = 30.0) -> float:
        """Until every sentinel names the replica as primary and it answers; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            addresses = [await self.master_address(port) for port in SENTINEL_PORTS]
            if all(a == (HOST, REPLICA_PORT) for a in addresses) and await _redis_ping(REPLICA_PORT):
                self.primary_port = REPLICA_PORT
                took = time.monotonic() - started
                self.events.append(f"replica on {REPLICA_PORT} promoted after {took:.1f} s")
                return took
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no failover to {REPLICA_PORT} within {timeout_s:.0f} s")


async def _start_redis(name: str, port: int, directory: Path, *extra: str) -> processes.Child:
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--bind", HOST, "--port", str(port), "--daemonize", "no", "--protected-mode", "no",
        "--dir", str(directory), "--save", "", "--appendonly", "no", *extra,
    ]  # fmt: skip
    child = await processes.start(name, argv, log_path=directory / f"{name}.log")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await _redis_ping(port):
        if not child.running or time.monotonic() > deadline:
            await child.stop(5)
            raise RuntimeError(f"{name} did not answer on {port}: {child.describe_exit()}")
        await asyncio.sleep(0.05)
    return child


@contextlib.asynccontextmanager
async def sentinel_group(directory: Path) -> AsyncIterator[SentinelGroup]:
    """Primary, replica and three sentinels, ready (every sentinel sees the others and the replica)."""
    executable = await asyncio.to_thread(ensure_sentinel_installed)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    children: list[processes.Child] = []
    try:
        primary = await _start_redis("redis-primary", PRIMARY_PORT, directory)
        children.append(primary)
        replica = await _start_redis(
            "redis-replica", REPLICA_PORT, directory, "--replicaof", HOST, str(PRIMARY_PORT)
        )
        children.append(replica)
        sentinels = []
        for port in SENTINEL_PORTS:
            conf = directory / f"sentinel-{port}.conf"
            await asyncio.to_thread(conf.write_text, sentinel_conf(port, directory))
            child = await processes.start(
                f"sentinel-{port}", [executable, str(conf)], log_path=directory / f"sentinel-{port}.log"
            )
            children.append(child)
            sentinels.append(child)
        group = SentinelGroup(directory, primary, replica, sentinels)
        await group.wait_ready()
        yield group
    finally:
        await asyncio.gather(*(c.stop(10) for c in reversed(children)), return_exceptions=True)
