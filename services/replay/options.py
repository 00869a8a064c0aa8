"""What ``apihub replay`` is asked to do: its arguments, the target they name and the options of a run."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from services.audit.collect import DEFAULT_GRACE_MS, Limits, Source
from services.audit.command import add_source_arguments, source_from
from services.audit.join import OUTCOMES, Filters
from services.audit.timerange import TimeRange, parse_duration_ms, resolve_range
from services.replay import ReplayError
from services.replay.compare import DEFAULT_IGNORE
from services.replay.names import DEFAULT_PREFIX, HubNames, check_names
from services.settings import ClientSettings, HubSettings, KafkaSettings, RedisSettings

DEFAULT_SANDBOX_URL = "http://127.0.0.1:18080"


class ReplaySettings(HubSettings):
    """What the replay reads from ``APIHUB_*``: Kafka's address and topics, and the Redis its hub uses."""

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()


@dataclass(frozen=True)
class Target:
    """Where replayed requests go: the replay's own sandbox hub, or a running hub's topics."""

    kind: str  # "sandbox" | "hub"
    sandbox_url: str = DEFAULT_SANDBOX_URL
    names: HubNames = field(default_factory=lambda: HubNames.from_prefix(DEFAULT_PREFIX))
    redis_url: str = "redis://127.0.0.1:16379/0"
    request_topic: str = "api.requests"  # for "hub"
    reply_topic: str = "api.responses"  # for "hub"
    # How the replay's own gateway connects to Kafka (its APIHUB_KAFKA__SECURITY_* principal, for "sandbox").
    security: KafkaSettings = field(default_factory=KafkaSettings)

    def describe(self) -> list[str]:
        """The target in words, for the report."""
        if self.kind == "sandbox":
            return [f"sandbox {self.sandbox_url}", f"(own gateway on {self.names.requests})"]
        return [f"hub {self.request_topic} → {self.reply_topic}", "(--live: may reach a live broker)"]


@dataclass(frozen=True)
class ReplayOptions:
    """Everything a run needs, decided from the arguments."""

    source: Source
    time_range: TimeRange
    filters: Filters
    target: Target
    named: frozenset[str] = frozenset()
    dry_run: bool = False
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    max_requests: int = 200
    concurrency: int = 4
    timeout_s: float = 30.0
    max_send_s: float = 600.0
    output_format: str = "table"
    output: Path | None = None
    limits: Limits = field(default_factory=Limits)
    grace_ms: int = DEFAULT_GRACE_MS
    show_progress: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``apihub replay``: the recorded range and filters, the target, what to send."""
    add_source_arguments(parser)
    parser.add_argument(
        "--status", action="append", default=[], choices=OUTCOMES, metavar="STATUS", help="recorded outcomes"
    )
    where = parser.add_argument_group("target")
    where.add_argument("--target", choices=["sandbox", "hub"], default="sandbox")
    where.add_argument("--sandbox-url", help=f"default: $SANDBOX_URL, else {DEFAULT_SANDBOX_URL}")
    where.add_argument("--redis-url", help="the replay gateway's Redis (default APIHUB_REDIS__URL)")
    where.add_argument(
        "--replay-prefix",
        default=DEFAULT_PREFIX,
        help=f"the replay hub's topics {{prefix}}.requests|responses|dlq, group {{prefix}}.gateway "
        f"({DEFAULT_PREFIX})",
    )
    where.add_argument("--hub-request-topic", help="--target hub: where to send (api.requests)")
    where.add_argument("--hub-reply-topic", help="--target hub: where answers come (api.responses)")
    where.add_argument("--live", action="store_true", help="allow --target hub, which may call a live broker")
    what = parser.add_argument_group("what to send and compare")
    what.add_argument(
        "--include-order",
        action="extend",
        nargs="+",
        default=[],
        metavar="REQUEST_ID",
        help="send these non-idempotent calls (orders) too, each named by its recorded request id",
    )
    what.add_argument("--dry-run", action="store_true", help="print what would be sent; send nothing")
    what.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a data field (name or path) to ignore",
    )
    what.add_argument(
        "--no-default-ignore",
        action="store_true",
        help=f"compare the default volatile fields too ({', '.join(DEFAULT_IGNORE)})",
    )
    what.add_argument("--max-requests", type=int, default=200, help="requests sent at most (200)")
    what.add_argument("--concurrency", type=int, default=4, help="requests waiting at once (4)")
    what.add_argument("--timeout", type=float, default=30.0, help="seconds each request may take (30)")
    what.add_argument("--max-send-seconds", type=float, default=600.0, help="seconds of sending (600)")
    out = parser.add_argument_group("output")
    out.add_argument("--format", dest="output_format", choices=["table", "jsonl"], default="table")
    out.add_argument("--output", type=Path, help="write there instead of stdout")


def target_from(args: argparse.Namespace, settings: ReplaySettings) -> Target:
    """The target of the arguments; ``ReplayError`` for a hub without ``--live``."""
    if args.target == "hub" and not args.live:
        raise ReplayError(
            "--target hub sends into a running hub, whose gateway may call a live broker: "
            "add --live to mean it"
        )
    names = HubNames.from_prefix(args.replay_prefix)
    if args.target == "sandbox":
        check_names(
            names,
            settings.kafka.group_id,
            (settings.kafka.request_topic, settings.kafka.response_topic, settings.kafka.dlq_topic),
            settings.redis.key_prefix,
        )
    return Target(
        kind=args.target,
        sandbox_url=args.sandbox_url or os.environ.get("SANDBOX_URL") or DEFAULT_SANDBOX_URL,
        names=names,
        redis_url=args.redis_url or settings.redis.url,
        request_topic=args.hub_request_topic or settings.kafka.request_topic,
        reply_topic=args.hub_reply_topic or settings.kafka.response_topic,
        security=settings.kafka,
    )


def options_from(args: argparse.Namespace, now_ms: int) -> ReplayOptions:
    """The options of an ``apihub replay`` command line; raises ``AuditError`` on bad input."""
    for name in ("max_records", "max_seconds", "max_requests", "concurrency", "timeout", "max_send_seconds"):
        if not 0 < getattr(args, name) < math.inf:  # NaN and inf too: a deadline or bound they cannot make
            raise ReplayError(f"--{name.replace('_', '-')} must be a positive, finite number")
    settings = ReplaySettings()
    try:
        filters = Filters(tuple(args.provider), tuple(args.tr_id), tuple(args.caller), tuple(args.status))
    except ValueError as exc:
        raise ReplayError(str(exc)) from None
    ignore = tuple(args.ignore) + (() if args.no_default_ignore else DEFAULT_IGNORE)
    return ReplayOptions(
        source=source_from(args, ClientSettings(), dlq=False),
        time_range=resolve_range(args.start, args.end, args.last, now_ms),
        filters=filters,
        target=target_from(args, settings),
        named=frozenset(args.include_order),
        dry_run=args.dry_run,
        ignore=ignore,
        max_requests=args.max_requests,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_send_s=args.max_send_seconds,
        output_format=args.output_format,
        output=None if args.output in (None, Path("-")) else args.output,
        limits=Limits(args.max_records, args.max_seconds),
        grace_ms=parse_duration_ms(args.grace),
        show_progress=not args.quiet,
    )
