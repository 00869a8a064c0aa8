"""``apihub``: the command line of API Hub (gateway, sandbox, topics, schemas, call, demo)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import orjson

from services.logs import configure_logging
from services.settings import ClientSettings


def _run_until_signal(main: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main

    asyncio.run(runner())


def cmd_gateway(_: argparse.Namespace) -> int:
    """Run one gateway instance until SIGTERM/SIGINT."""
    from services.gateway.app import run_gateway
    from services.settings import GatewaySettings

    settings = GatewaySettings()
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    _run_until_signal(run_gateway(settings, stop), stop)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Run the broker sandbox until SIGTERM/SIGINT."""
    from services.sandbox.app import serve
    from services.sandbox.settings import SandboxSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = SandboxSettings(**overrides)
    configure_logging("INFO")
    stop = asyncio.Event()

    async def main() -> None:
        task = asyncio.create_task(serve(settings))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    _run_until_signal(main(), stop)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create or verify the declared topics; exit 1 on drift."""
    from services.topics import ensure_topics, load_topics

    bootstrap = args.bootstrap_servers or ClientSettings().kafka.bootstrap_servers
    report = asyncio.run(ensure_topics(bootstrap, load_topics()))
    for name in report.created:
        print(f"created   {name}")
    for name in report.unchanged:
        print(f"ok        {name}")
    for line in report.drift:
        print(f"DRIFT     {line}")
    print(f"{len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drifted")
    return 1 if report.drift else 0


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write or check the JSON Schema files."""
    from services import schemas

    if args.action == "generate":
        for name in schemas.write():
            print(f"wrote schemas/{name}")
        return 0
    stale = schemas.stale()
    for name in stale:
        print(f"schemas/{name} differs from the models: run `apihub schemas generate`", file=sys.stderr)
    return 1 if stale else 0


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"parameter {pair!r} is not KEY=VALUE")
        params[key] = value
    return params


def cmd_call(args: argparse.Namespace) -> int:
    """Send one request through the hub and print the response."""
    from hubclient import HubClient, HubError

    settings = ClientSettings()
    params = _parse_params(args.params)

    async def main() -> int:
        async with HubClient.connect(
            settings.kafka.bootstrap_servers,
            caller=args.caller,
            request_topic=settings.kafka.request_topic,
            reply_topic=settings.kafka.response_topic,
        ) as hub:
            try:
                response = await hub.submit(
                    args.provider, args.tr_id, params, timeout=args.timeout, priority=args.priority
                )
            except HubError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        print(orjson.dumps(response.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return 0 if response.ok else 1

    return asyncio.run(main())


def cmd_demo(args: argparse.Namespace) -> int:
    """Send the demo workload through the hub and print a summary."""
    from services.demo import run_demo

    return asyncio.run(run_demo(ClientSettings(), rounds=args.rounds))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``apihub``."""
    parser = argparse.ArgumentParser(prog="apihub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="run a gateway instance").set_defaults(func=cmd_gateway)
    sandbox = sub.add_parser("sandbox", help="run the KIS/Kiwoom sandbox")
    sandbox.add_argument("--host")
    sandbox.add_argument("--port", type=int)
    sandbox.set_defaults(func=cmd_sandbox)
    topics = sub.add_parser("topics", help="manage the declared topics")
    topics.add_argument("action", choices=["ensure"])
    topics.add_argument("--bootstrap-servers")
    topics.set_defaults(func=cmd_topics)
    schemas = sub.add_parser("schemas", help="generate or check schemas/*.schema.json")
    schemas.add_argument("action", choices=["generate", "check"])
    schemas.set_defaults(func=cmd_schemas)
    call = sub.add_parser("call", help="send one request through the hub")
    call.add_argument("provider", choices=["KIS", "KIWOOM"])
    call.add_argument("tr_id")
    call.add_argument("params", nargs="*", metavar="KEY=VALUE")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    call.add_argument("--priority", default="interactive", choices=["interactive", "normal", "bulk"])
    call.add_argument("--caller", default="apihub-cli")
    call.set_defaults(func=cmd_call)
    demo = sub.add_parser("demo", help="run the demo workload and print a summary")
    demo.add_argument("--rounds", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``apihub`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
