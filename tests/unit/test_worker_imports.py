"""Workers reach the brokers only through hubclient: no aiohttp, nothing of the gateway, in their process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.worker.main import WORKERS

PROBE = """
import sys
import services.cli, services.worker.main, {module}
bad = sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp' or m.startswith('services.gateway'))
print(','.join(bad))
"""


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_imports_no_http_client_and_no_gateway(name: str) -> None:
    """Importing a worker and the CLI that starts it loads neither aiohttp nor any gateway module."""
    probe = PROBE.format(module=WORKERS[name].module)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = [m for m in done.stdout.strip().split(",") if m]
    assert loaded == [], f"{name} loads {loaded}"


def test_the_probe_sees_a_forbidden_import() -> None:
    """The probe itself works: importing the gateway app (its metrics server is aiohttp) is reported."""
    probe = PROBE.format(module="services.gateway.app")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "aiohttp" in done.stdout and "services.gateway.app" in done.stdout
