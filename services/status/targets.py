"""What ``apihub status`` watches: the gateway's and the workers' metrics addresses, each provider's limit.

Built once at the command's edge (``StatusSettings``, then ``targets``) from, in this order of precedence:
the command's flags, ``APIHUB_*`` variables in the environment, ``.local/stack.env`` (written by
``make up``), and the local stack's defaults. The gateway is ``APIHUB_GATEWAY_METRICS_URL`` (the setting
``apihub demo`` reads too); each worker is ``APIHUB_WORKER_URLS__<NAME>`` (stack.env has the stack's), else
where ``apihub worker NAME`` puts its health server by default (18091 history-collector, 18092
verification-worker, 18093 recovery-worker, on ``APIHUB_HEALTH_HOST``).
The limits (calls per second) are the gateway's own settings, ``APIHUB_KIS__RATE_PER_S`` and
``APIHUB_KIWOOM__RATE_PER_S``: the metrics carry what was sent, the settings what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from services.settings import HubSettings, KisSettings, KiwoomSettings
from services.worker.main import WORKERS

#: ``make up``'s addresses; read when present, below the environment.
STACK_ENV = Path(__file__).resolve().parents[2] / ".local" / "stack.env"

GATEWAY = "gateway"


class WorkerUrls(BaseModel):
    """Each worker's health address (``APIHUB_WORKER_URLS__HISTORY_COLLECTOR=http://...``, which
    ``make up`` writes to stack.env); unset, ``health_host`` and the worker's default port."""

    history_collector: str | None = None
    verification_worker: str | None = None
    recovery_worker: str | None = None


class StatusSettings(HubSettings):
    """The settings ``apihub status`` reads (names shared with the gateway, the workers and ``demo``)."""

    model_config = SettingsConfigDict(env_file=STACK_ENV)

    gateway_metrics_url: str = "http://127.0.0.1:18081"
    health_host: str = "127.0.0.1"
    worker_urls: WorkerUrls = WorkerUrls()
    kis: KisSettings = KisSettings()
    kiwoom: KiwoomSettings = KiwoomSettings()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One service to scrape: its name (``gateway`` or a worker's) and its base URL (``/metrics`` below)."""

    name: str
    url: str

    @property
    def is_gateway(self) -> bool:
        """True for the gateway, whose page has the pacing, queues and tokens."""
        return self.name == GATEWAY


@dataclass(frozen=True, slots=True)
class Targets:
    """Everything one run of ``apihub status`` looks at."""

    endpoints: tuple[Endpoint, ...]
    limits_per_s: dict[str, float]  # provider -> the key's calls per second


def targets(
    settings: StatusSettings, *, gateway: str | None = None, workers: dict[str, str] | None = None
) -> Targets:
    """The endpoints and limits for ``settings``; the flags' ``gateway`` URL takes precedence, and
    ``workers`` (name -> URL, any name), when given, are the workers watched instead of the stack's three."""
    urls = workers or {
        name: getattr(settings.worker_urls, name.replace("-", "_"))
        or f"http://{settings.health_host}:{kind.health_port}"
        for name, kind in WORKERS.items()
    }
    endpoints = [Endpoint(GATEWAY, (gateway or settings.gateway_metrics_url).rstrip("/"))]
    endpoints += [Endpoint(name, url.rstrip("/")) for name, url in urls.items()]
    limits = {"KIS": settings.kis.rate_per_s, "KIWOOM": settings.kiwoom.rate_per_s}
    return Targets(tuple(endpoints), limits)
