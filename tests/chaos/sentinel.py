"""Redis behind Sentinel on loopback for the fault suite: one primary, one replica, three sentinels.

    async with sentinel_group(tmp_path) as group:
        settings.redis.sentinels = group.sentinels          # ["127.0.0.1:46390", ...]
        await group.kill_primary()                          # SIGKILL: the sentinels promote the replica
        await group.wait_failover(timeout_s=30)

Debian's ``redis-sentinel`` (installed with apt-get when missing and this runs as root, as ops/stack.sh does
for redis-server); each process is a child of the test with its config and log under ``tmp_path``, on the
suite's ports (``PORTS``), stopped when the block ends. Sentinels judge a primary down after
``DOWN_AFTER_MS`` and need two of three to agree (quorum 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests import processes

MASTER = "apihub-chaos"
HOST = "127.0.0.1"
#: The suite's ports for Redis replicas and sentinels. They lie in Linux's ephemeral range, so any outgoing
#: connection may hold one for a while: each process takes the next free one and moves on if it cannot bind.
PORTS = range(46381, 46400)
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


def sentinel_conf(port: int, directory: Path, primary_port: int) -> str:
    """A sentinel's config: watch the primary on loopback, a quorum of two, fast failure detection."""
    return (
        f"port {port}\nbind {HOST}\nprotected-mode no\ndaemonize no\ndir {directory}\n"
        f"sentinel monitor {MASTER} {HOST} {primary_port} 2\n"
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
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    events: list[str] = field(default_factory=list)

    @property
    def sentinels(self) -> list[str]:
        """The sentinels as ``host:port`` (``RedisSettings.sentinels``)."""
        return [f"{HOST}:{port}" for port in self.sentinel_ports]

    async def master_address(self, sentinel_port: int) -> tuple[str, int] | None:
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
            if all([await self._sentinel_sees_all(port) for port in self.sentinel_ports]):
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
            addresses = [await self.master_address(port) for port in self.sentinel_ports]
            replica = self.replica_port
            if all(a == (HOST, replica) for a in addresses) and await _redis_ping(replica):
                self.primary_port = replica
                took = time.monotonic() - started
                self.events.append(f"replica on {replica} promoted after {took:.1f} s")
                return took
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no failover to {self.replica_port} within {timeout_s:.0f} s")


def bindable(port: int) -> bool:
    """Nothing holds ``port`` on the loopback address now."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


async def _answering(port: int, child: processes.Child) -> bool:
    """Until the child answers PING on ``port`` (True) or exits (False, e.g. it could not bind)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.running:
            return False
        if await _redis_ping(port):
            return True
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{child.name} did not answer on {port} within {READY_TIMEOUT_S:.0f} s")


async def _start_on_free_port(
    name: str, argv_for: Callable[[int], list[str]], directory: Path, taken: set[int]
) -> tuple[processes.Child, int]:
    """Start ``argv_for(port)`` on the first port of ``PORTS`` that is free and not ``taken``; when the
    process cannot bind (a connection took the port meanwhile) try the next one."""
    for port in PORTS:
        if port in taken or not bindable(port):
            continue
        log = directory / f"{name}-{port}.log"
        child = await processes.start(f"{name}:{port}", argv_for(port), log_path=log)
        if await _answering(port, child):
            taken.add(port)
            return child, port
        await child.stop(5)
    raise RuntimeError(f"no free port for {name} in {PORTS.start}-{PORTS.stop - 1}")


def _redis_argv(directory: Path, *extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--bind", HOST, "--port", str(port), "--daemonize", "no", "--protected-mode", "no",
            "--dir", str(directory), "--save", "", "--appendonly", "no", *extra,
        ]  # fmt: skip

    return argv


@contextlib.asynccontextmanager
async def sentinel_group(directory: Path) -> AsyncIterator[SentinelGroup]:
    """Primary, replica and three sentinels, ready (every sentinel sees the others and the replica)."""
    executable = await asyncio.to_thread(ensure_sentinel_installed)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    children: list[processes.Child] = []
    taken: set[int] = set()
    try:
        primary, primary_port = await _start_on_free_port(
            "redis-primary", _redis_argv(directory), directory, taken
        )
        children.append(primary)
        replica_argv = _redis_argv(directory, "--replicaof", HOST, str(primary_port))
        replica, replica_port = await _start_on_free_port("redis-replica", replica_argv, directory, taken)
        children.append(replica)
        sentinel_ports = []
        for i in range(3):

            def sentinel_argv(port: int, i: int = i) -> list[str]:
                conf = directory / f"sentinel-{i}-{port}.conf"
                conf.write_text(sentinel_conf(port, directory, primary_port))
                return [executable, str(conf)]

            child, port = await _start_on_free_port(f"sentinel-{i}", sentinel_argv, directory, taken)
            children.append(child)
            sentinel_ports.append(port)
        group = SentinelGroup(directory, primary, replica, primary_port, replica_port, sentinel_ports)
        await group.wait_ready()
        yield group
    finally:
        await asyncio.gather(*(c.stop(10) for c in reversed(children)), return_exceptions=True)
