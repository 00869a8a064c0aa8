"""The production profile's environments, as pure functions of the soak stack's addresses.

The gateway gets the settings of ``.env.prod.example`` (the env file of ``gateway-worker-real``), then
what ``docker-compose.yml`` sets over it (Kafka and Redis addresses, the metrics port, the instance id),
then the sandbox in place of the brokers' addresses with fake keys of the brokers' shapes. Every value
that differs from the env file is listed by ``gateway_env`` so the report can say so. The workers get what
compose gives them (Kafka, a health port, ``{name}-1`` as instance id, no env file). The sandbox and the
feed share a clock that starts inside the session (``CLOCK_START_KST``), so the feed publishes live trades
for the whole run, and the feed leaves gaps and corrupts a few trades so verification and recovery have
something to find.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROD_ENV_FILE = REPO / ".env.prod.example"
WORKERS = ("history-collector", "verification-worker", "recovery-worker")
#: Simulated KST time of day at which the sandbox's and the feed's clocks start: the session is open, and
#: stays open for five and a half hours of soak.
CLOCK_START_KST = "10:00:00"
#: Share of each symbol's session minutes the feed leaves out, and of its trades it corrupts.
FEED_GAP_RATE = 0.02
FEED_CORRUPT_RATE = 0.0005
FEED_SEED = 29
#: Gaps in every symbol's feed inside the first windows verified, so even a short run repairs something.
FEED_GAPS = ("*@09:03-09:05", "*@09:33-09:34")


@dataclass(frozen=True)
class Addresses:
    """Where the soak stack's own services listen (loopback, free ports)."""

    kafka: str  # host:port
    redis_url: str
    sandbox_url: str
    gateway_metrics_port: int
    worker_health_ports: Mapping[str, int]


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped; single or double quotes
    around a value removed, as Compose does)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def fake_keys() -> dict[str, str]:
    """Fresh appkeys and secrets of the brokers' shapes (36 and 180 characters), for the sandbox only."""
    return {
        "APIHUB_KIS__APPKEY": "PS" + secrets.token_hex(17),
        "APIHUB_KIS__APPSECRET": secrets.token_urlsafe(135)[:180],
        "APIHUB_KIWOOM__APPKEY": "PS" + secrets.token_hex(17),
        "APIHUB_KIWOOM__SECRETKEY": secrets.token_urlsafe(135)[:180],
    }


def gateway_env(
    prod_env: Mapping[str, str], addresses: Addresses, keys: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The gateway's ``APIHUB_*`` environment and, by name, each value that differs from ``prod_env``
    (secrets shown as ``(fake key)``). Empty values of the env file are left out, as the settings ignore
    them."""
    env = {k: v for k, v in prod_env.items() if v != ""}
    compose = {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": addresses.kafka,
        "APIHUB_REDIS__URL": addresses.redis_url,
        "APIHUB_METRICS_PORT": str(addresses.gateway_metrics_port),
        "APIHUB_INSTANCE_ID": "gateway-worker-real-1",
        # Loopback only: inside a container the image listens on every interface.
        "APIHUB_METRICS_HOST": "127.0.0.1",
    }
    sandbox = {
        "APIHUB_KIS__BASE_URL": f"{addresses.sandbox_url}/kis/real",
        "APIHUB_KIS__ENVIRONMENT": "real",
        "APIHUB_KIWOOM__BASE_URL": f"{addresses.sandbox_url}/kiwoom/real",
        "APIHUB_KIWOOM__ENVIRONMENT": "real",
        **keys,
    }
    changed: dict[str, str] = {}
    for key, value in {**compose, **sandbox}.items():
        if prod_env.get(key, "") != value:
            changed[key] = "(fake key)" if key in keys else value
        env[key] = value
    return env, changed


def worker_env(name: str, addresses: Addresses) -> dict[str, str]:
    """A worker's environment as docker-compose.yml gives it (no env file, no credential)."""
    return {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": addresses.kafka,
        "APIHUB_HEALTH_PORT": str(addresses.worker_health_ports[name]),
        "APIHUB_INSTANCE_ID": f"{name}-1",
    }


def clock_env() -> dict[str, str]:
    """The sandbox settings the sandbox and the feed share: the same market, the clock inside the session."""
    return {"APIHUB_SANDBOX__CLOCK_START_TIME_KST": CLOCK_START_KST}


def feed_env() -> dict[str, str]:
    """The feed's settings: the shared clock, plus gaps and corrupted trades for the workers to find."""
    return {
        **clock_env(),
        "APIHUB_SANDBOX__FEED__GAP_RATE": str(FEED_GAP_RATE),
        "APIHUB_SANDBOX__FEED__CORRUPT_RATE": str(FEED_CORRUPT_RATE),
        "APIHUB_SANDBOX__FEED__SEED": str(FEED_SEED),
        "APIHUB_SANDBOX__FEED__GAPS": json.dumps(list(FEED_GAPS)),
    }
