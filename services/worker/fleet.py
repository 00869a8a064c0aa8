"""``WorkerFleet``: the three workers as ``apihub worker NAME`` processes, for the demo and the tests.

Each process gets the given environment plus its own consumer group and health port 0 (any free port);
its JSON log goes to ``log_dir/{prefix}-{name}.log``. ``kill`` sends SIGKILL (what a crash looks like to
Kafka: the open transaction stays until the restarted worker fences it), ``start`` starts one again under
the same instance id, ``stop`` ends them all with SIGTERM (SIGKILL after ``STOP_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from services.worker.main import WORKERS

STOP_TIMEOUT_S = 20.0


class WorkerFleet:
    """Worker processes by name."""

    def __init__(self, env: Mapping[str, str], *, log_dir: Path, prefix: str, group_suffix: str) -> None:
        self._env = dict(env)
        self._log_dir = log_dir
        self._prefix = prefix
        self._group_suffix = group_suffix
        self._children: dict[str, tuple[asyncio.subprocess.Process, BinaryIO]] = {}
        self.restarts = 0

    def _log(self, name: str) -> BinaryIO:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return (self._log_dir / f"{self._prefix}-{name}.log").open("ab")

    def log_path(self, name: str) -> Path:
        """Where worker ``name`` logs."""
        return self._log_dir / f"{self._prefix}-{name}.log"

    async def start(self, name: str) -> None:
        """Start worker ``name`` (again)."""
        if name not in WORKERS:
            raise ValueError(f"no worker named {name!r}; known: {', '.join(WORKERS)}")
        env = {
            **os.environ,
            **self._env,
            "APIHUB_GROUP_ID": f"{name}{self._group_suffix}",
            "APIHUB_HEALTH_PORT": "0",
        }
        log = self._log(name)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "worker", name, env=env, stdout=log, stderr=log
        )
        self._children[name] = (child, log)

    async def start_all(self) -> None:
        """Start every worker."""
        for name in WORKERS:
            await self.start(name)

    def pid(self, name: str) -> int:
        """Process id of worker ``name``."""
        return self._children[name][0].pid

    async def kill(self, name: str) -> None:
        """SIGKILL worker ``name`` and wait for it to be gone."""
        child, log = self._children.pop(name)
        if child.returncode is None:
            child.kill()
        await child.wait()
        log.close()

    async def restart(self, name: str) -> None:
        """SIGKILL worker ``name`` and start it again."""
        await self.kill(name)
        await self.start(name)
        self.restarts += 1

    async def stop(self) -> None:
        """SIGTERM every worker; SIGKILL any that outlives ``STOP_TIMEOUT_S``."""
        for name, (child, log) in list(self._children.items()):
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    child.kill()
                    await child.wait()
            log.close()
            del self._children[name]
