"""``apihub credentials``: the credential pools as the gateway sees them, never a secret.

One row per pool member: provider, name, limit domain, environment, the account (masked), the appkey's
fingerprint (the hash that names it in Redis keys), its limit, its pace now (sends recorded in the shared
schedule over the last second and the last ten) and its shared token's age and time left. The figures
come from the Redis every gateway instance shares; without it the pool is still listed and the command
exits 1. The gateway's modules are imported when the command runs, so registering it on ``apihub``
loads none of them (the workers' processes must not).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from hubclient.models import Provider
from services.redis_client import redis_client
from services.settings import GatewaySettings
from services.urls import masked

if TYPE_CHECKING:
    from services.gateway.pool import Member

WINDOWS_S = (1.0, 10.0)


@dataclass
class Row:
    """One member, ready to print."""

    provider: str
    member: str
    domain: str
    environment: str
    account: str
    appkey: str  # its fingerprint
    rate_per_s: float
    sent_1s: int | None = None
    sent_10s: int | None = None
    token_age_s: float | None = None
    token_left_s: float | None = None


def mask(account: str | None) -> str:
    """An account number with its middle hidden (``5000****-01``); '-' without one."""
    if not account:
        return "-"
    head, _, tail = account.partition("-")
    shown = head[:4] + "*" * max(len(head) - 4, 0)
    return f"{shown}-{tail}" if tail else shown


def members(settings: GatewaySettings) -> list[Member]:
    """Every member of both pools (a credentials file is read once, here)."""
    from services.gateway.pool import Member  # lazily: see the module docstring

    return [Member(p, name, m) for p in Provider for name, m in settings.provider(p).pool().items()]


def rows(pool: list[Member]) -> list[Row]:
    """One row per member, without live figures."""
    from services.gateway.pool import account_name  # lazily: see the module docstring
    from services.gateway.token_store import fingerprint

    return [
        Row(
            provider=m.provider.value,
            member=m.name,
            domain=m.domain,
            environment=m.settings.environment,
            account=mask(account_name(m.settings)),
            appkey=fingerprint(m.settings.appkey.get_secret_value()) if m.settings.appkey else "(none)",
            rate_per_s=m.settings.rate_per_s,
        )
        for m in pool
    ]


async def fill(settings: GatewaySettings, pool: list[Member], table: list[Row]) -> None:
    """Add each member's pace and token figures from Redis (raises ``RedisError``/``OSError``)."""
    from services.gateway.clock import SystemClock  # lazily: see the module docstring
    from services.gateway.slots import log_key, shared_name
    from services.gateway.token_store import RedisTokenStore

    redis = redis_client(settings.redis, connections=2, wait_s=2)
    appkeys = {m.domain: m.settings.appkey.get_secret_value() for m in pool if m.settings.appkey is not None}
    store = RedisTokenStore(redis, key_prefix=settings.redis.key_prefix, appkeys=appkeys, clock=SystemClock())
    try:
        seconds, micros = await redis.time()
        now_s = seconds + micros / 1e6
        for row in table:
            log = log_key(settings.redis.key_prefix, shared_name(row.domain, appkeys.get(row.domain)))
            counts = [await redis.zcount(log, int((now_s - w) * 1e6), "+inf") for w in WINDOWS_S]
            row.sent_1s, row.sent_10s = counts
            stored = await store.load(row.domain)
            if stored is not None:
                row.token_left_s = stored.grant.expires_at_s - now_s
                row.token_age_s = now_s - stored.issued_at_s if stored.issued_at_s else None
    finally:
        await redis.aclose()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


def render(table: list[Row]) -> str:
    """The table as text, one member a line."""
    head = (
        "PROVIDER",
        "MEMBER",
        "DOMAIN",
        "ENV",
        "ACCOUNT",
        "APPKEY",
        "RATE/S",
        "1s",
        "10s",
        "TOKEN AGE",
        "LEFT",
    )
    lines = [head]
    for r in table:
        lines.append(
            (
                r.provider,
                r.member,
                r.domain,
                r.environment,
                r.account,
                r.appkey,
                f"{r.rate_per_s:g}",
                "-" if r.sent_1s is None else str(r.sent_1s),
                "-" if r.sent_10s is None else f"{r.sent_10s / 10:.1f}/s",
                _duration(r.token_age_s),
                _duration(r.token_left_s),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def cmd_credentials(args: argparse.Namespace) -> int:
    """List the pools; exit 1 when Redis could not be read."""
    settings = GatewaySettings()
    pool = members(settings)
    table = rows(pool)
    problem = None
    try:
        asyncio.run(fill(settings, pool, table))
    except (RedisError, OSError) as exc:
        problem = f"Redis at {masked(settings.redis.url)} not readable ({exc}): pace, tokens unknown"
    if args.json:
        print(orjson.dumps([asdict(r) for r in table]).decode())
    else:
        print(render(table))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``credentials`` command on ``apihub``'s subparsers."""
    parser = sub.add_parser(
        "credentials", help="the credential pools: members, pace and token age (never a secret)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    parser.set_defaults(func=cmd_credentials)
