"""``apihub status``: the command line of the live view (flags, settings, exit codes)."""

from __future__ import annotations

import argparse
import sys

from hubclient.models import Provider

DEFAULT_INTERVAL_S = 2.0
MAX_SCRAPE_TIMEOUT_S = 2.0


def _positive(text: str, unit: str = "seconds") -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _limit(text: str) -> tuple[str, float]:
    provider, value = _pair(text)
    known = [p.value for p in Provider]
    if provider.upper() not in known:
        raise argparse.ArgumentTypeError(f"{provider!r} is not a provider ({', '.join(known)})")
    return provider.upper(), _positive(value, "calls per second")


def cmd_status(args: argparse.Namespace) -> int:
    """Show the live view (or one frame with ``--once``); 0, or 1 when ``--once`` found a service down."""
    from services.status.live import run
    from services.status.targets import StatusSettings, targets

    watched = targets(StatusSettings(), gateway=args.gateway, workers=dict(args.worker))
    watched.limits_per_s.update(dict(args.limit))
    timeout_s = args.timeout if args.timeout is not None else min(args.interval, MAX_SCRAPE_TIMEOUT_S)
    return run(watched, interval_s=args.interval, timeout_s=timeout_s, once=args.once, out=sys.stdout)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``status`` command on ``apihub``'s subparsers."""
    status = sub.add_parser(
        "status",
        help="live view of the gateway's and the workers' metrics (pacing, queues, rejections, tokens, "
        "latency, lag, worker progress) in 80 columns; Ctrl-C quits",
    )
    status.add_argument(
        "--interval",
        type=_positive,
        default=DEFAULT_INTERVAL_S,
        help="seconds between frames, and the window the rates are computed over "
        f"(default {DEFAULT_INTERVAL_S:g})",
    )
    status.add_argument(
        "--once",
        action="store_true",
        help="scrape twice, --interval apart, print one frame and exit (0 all up, 1 a service down)",
    )
    status.add_argument(
        "--gateway", metavar="URL", help="the gateway's metrics address (default $APIHUB_GATEWAY_METRICS_URL)"
    )
    status.add_argument(
        "--worker",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a worker to watch instead of the local stack's three (18091-18093); repeatable",
    )
    status.add_argument(
        "--limit",
        type=_limit,
        action="append",
        default=[],
        metavar="PROVIDER=RATE",
        help="a provider's calls per second to compare with (default $APIHUB_KIS__RATE_PER_S, ...)",
    )
    status.add_argument(
        "--timeout", type=_positive, help="seconds one scrape may take (default: the interval, at most 2)"
    )
    status.set_defaults(func=cmd_status)
