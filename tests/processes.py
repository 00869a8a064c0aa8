"""Child processes for the integration tests and the benchmarks, written once.

- ``start``: any Python child (``python -m services.cli SUBCOMMAND ...`` via ``apihub_argv``,
  or ``python -c ...``) with an environment of our choosing and its output in a log file; when a readiness
  URL is given, wait until it answers 200 and fail early (with the log's tail) if the child exits first.
- ``Child.stop``: SIGTERM, then SIGKILL after a bound; ``Child.kill``: SIGKILL at once (a crash on demand).
- ``sandbox``: ``apihub sandbox`` on a free loopback port, faults set through its admin API.
- ``gateway``: ``apihub gateway`` with the ``APIHUB_*`` environment it is given, ready when ``/readyz`` is.

Every child is started by us, known by its pid and stopped in a ``finally``; nothing here waits without a
bound. Children never inherit ``APIHUB_*`` variables from the shell (``clean_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
LOG_DIR = REPO / ".local" / "test-logs"
LOG_TAIL_BYTES = 2000


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on the loopback interface, never one this process handed out before: the port is
    free only until a child binds it, so two children started together must not be given the same one
    (twenty gateways started at once got a duplicate: one could not bind, and its sibling answered its
    readiness probe)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port this process has not handed out already, in 100 tries")


def clean_env(env: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """This process's environment without any ``APIHUB_*`` the shell may carry, plus ``env`` and
    ``overrides``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("APIHUB_")}
    out.update(env or {})
    out.update(overrides)
    return out


def apihub_argv(*args: str) -> list[str]:
    """The argv of an ``apihub`` subcommand run by this interpreter (``python -m services.cli ...``)."""
    return [sys.executable, "-m", "services.cli", *args]


def log_tail(path: Path | None, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log file, for error messages ('' without one)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Child:
    """A child process we started: its name, log file and start time (``time.monotonic()``)."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path | None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True until the child has exited and been reaped."""
        return self.proc.returncode is None

    async def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; returns the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                return await self.kill()
        return int(self.proc.returncode if self.proc.returncode is not None else 0)

    async def kill(self, timeout_s: float = 10) -> int:
        """SIGKILL now (a crash: no handler runs) and reap it; returns the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), timeout_s)
        return int(self.proc.returncode if self.proc.returncode is not None else 0)

    def describe_exit(self) -> str:
        """``name (pid N) exited with C; log tail: ...`` for error messages."""
        tail = log_tail(self.log_path)
        where = f" (log {self.log_path})" if self.log_path else ""
        text = f"{self.name} (pid {self.pid}) exited with {self.proc.returncode}{where}"
        return f"{text}; last lines:\n{tail}" if tail else text


async def wait_http_ok(url: str, timeout_s: float, child: Child | None = None) -> None:
    """Poll ``url`` until it answers 200; fail at once if ``child`` exits, or after ``timeout_s``."""
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
            while True:
                if child is not None and not child.running:
                    raise RuntimeError(f"not ready at {url}: {child.describe_exit()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
    except TimeoutError:
        name = child.name if child is not None else "the service"
        raise TimeoutError(f"{name} not ready at {url} within {timeout_s:.0f} s") from None


async def start(
    name: str,
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_url: str | None = None,
    ready_timeout_s: float = 60,
) -> Child:
    """Start ``argv`` (its first item the executable) in the repository with ``clean_env(env)``, output
    appended to ``log_path`` (discarded without one); wait for ``ready_url`` if given. A child that does not
    become ready is stopped before the error is raised."""
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        sink: Any = asyncio.subprocess.DEVNULL
        if log_path is not None:
            sink = files.enter_context(log_path.open("ab"))
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=clean_env(env), stdout=sink, stderr=sink, stdin=asyncio.subprocess.DEVNULL
        )
    child = Child(name, proc, log_path)
    if ready_url is not None:
        try:
            await wait_http_ok(ready_url, ready_timeout_s, child)
        except BaseException:
            await child.stop(10)
            raise
    return child


# --- the two services the tests run as processes ---------------------------------------------------


@dataclass
class SandboxProcess:
    """A running ``apihub sandbox``: its base URL and its process."""

    url: str
    child: Child


async def set_faults(url: str, faults: Mapping[str, object]) -> dict[str, object]:
    """``POST /_sandbox/faults`` (a partial ``FaultSettings``); returns the sandbox's fault settings now.
    Raises on an unknown or invalid field, so a fault the sandbox lacks never passes silently."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/_sandbox/faults", json=dict(faults)) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"the sandbox refused faults {dict(faults)}: {resp.status} {body}")
        async with session.get(f"{url}/_sandbox/faults") as resp:
            now: dict[str, object] = await resp.json()
    return now


@contextlib.asynccontextmanager
async def sandbox(
    *,
    settings: Mapping[str, object] | None = None,
    faults: Mapping[str, object] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 30,
) -> AsyncIterator[SandboxProcess]:
    """``apihub sandbox`` as its own process on a free loopback port, as remote as a real broker (its
    referee's clock shares no event loop with the load). ``settings`` become ``APIHUB_SANDBOX__<NAME>``
    variables (``kis_real_rate_per_s``, ``faults__latency_ms`` ...); ``faults`` go through the admin API once
    it is up."""
    port = free_port()
    env = {f"APIHUB_SANDBOX__{k.upper()}": str(v) for k, v in (settings or {}).items()}
    url = f"http://127.0.0.1:{port}"
    argv = apihub_argv("sandbox", "--host", "127.0.0.1", "--port", str(port))
    child = await start(
        "sandbox",
        argv,
        env=env,
        log_path=log_path,
        ready_url=f"{url}/healthz",
        ready_timeout_s=ready_timeout_s,
    )
    try:
        if faults:
            await set_faults(url, faults)
        yield SandboxProcess(url, child)
    finally:
        await child.stop(10)


@dataclass
class GatewayProcess:
    """A running ``apihub gateway``: its instance id, metrics URL, environment and process."""

    instance_id: str
    metrics_url: str
    env: dict[str, str]
    child: Child

    @property
    def pid(self) -> int:
        """The gateway's pid."""
        return self.child.pid

    async def kill(self) -> int:
        """SIGKILL the gateway (a crash) and reap it."""
        return await self.child.kill()

    async def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM (a graceful stop: revoke, drain, commit), SIGKILL after ``timeout_s``."""
        return await self.child.stop(timeout_s)

    async def metric(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels`` on the gateway's ``/metrics``;
        None when it exports no such sample."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.metrics_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            text = await resp.text()
        found, total = False, 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found, total = True, total + sample.value
        return total if found else None


async def start_gateway(
    env: Mapping[str, str], *, log_path: Path | None = None, ready_timeout_s: float | None = 60
) -> GatewayProcess:
    """Start ``apihub gateway`` with ``env`` (its ``APIHUB_*`` variables; ``APIHUB_METRICS_PORT`` required)
    and wait until ``/readyz`` says it consumes (not at all with ``ready_timeout_s=None``)."""
    env = dict(env)
    instance_id = env.get("APIHUB_INSTANCE_ID", "gateway")
    metrics_url = f"http://127.0.0.1:{env['APIHUB_METRICS_PORT']}"
    env.setdefault("APIHUB_METRICS_HOST", "127.0.0.1")
    child = await start(
        f"gateway {instance_id}",
        apihub_argv("gateway"),
        env=env,
        log_path=log_path,
        ready_url=None if ready_timeout_s is None else f"{metrics_url}/readyz",
        ready_timeout_s=ready_timeout_s or 0,
    )
    return GatewayProcess(instance_id, metrics_url, env, child)


@contextlib.asynccontextmanager
async def gateway(
    env: Mapping[str, str], *, log_path: Path | None = None, ready_timeout_s: float = 60
) -> AsyncIterator[GatewayProcess]:
    """A gateway process for the length of the block (stopped with SIGTERM, then SIGKILL)."""
    process = await start_gateway(env, log_path=log_path, ready_timeout_s=ready_timeout_s)
    try:
        yield process
    finally:
        await process.stop()
