"""``apihub``: the command line of API Hub (gateway, worker, history, sandbox, topics, schemas, call, feed,
demo, catalog, credentials, config, status, audit, replay)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from datetime import date
from typing import Any

import orjson
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError, ProducerFenced, UnknownTopicOrPartitionError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hubclient.errors import HubError
from hubclient.models import MAX_IDEMPOTENCY_KEY
from services.audit.command import add_parser as add_audit_parser
from services.catalog_cli import add_parser as add_catalog_parser
from services.credentials_cli import add_parser as add_credentials_parser
from services.logs import configure_logging
from services.replay.command import add_parser as add_replay_parser
from services.settings import (
    CALLER_NAME,
    ClientSettings,
    SettingsInvalid,
    bootstrap_servers,
    validation_errors,
    validation_message,
)
from services.status.command import add_parser as add_status_parser
from services.worker.task import MAX_TASK_S


def _run_until_signal(main: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main

    asyncio.run(runner())


def cmd_gateway(_: argparse.Namespace) -> int:
    """Run one gateway instance until SIGTERM/SIGINT."""
    from services.gateway.app import MetricsPortUnavailable, run_gateway
    from services.settings import GatewaySettings

    settings = GatewaySettings()
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    try:
        _run_until_signal(run_gateway(settings, stop), stop)
    except (RedisConnectionError, RedisTimeoutError) as exc:  # its message names the address, no password
        print(
            f"error: Redis is not reachable ({exc}); is the stack up (make up) and APIHUB_REDIS__URL "
            "(or APIHUB_REDIS__SENTINELS) right?",
            file=sys.stderr,
        )
        return 2
    except RedisError as exc:
        print(f"error: Redis refused the gateway ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    except MetricsPortUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one worker (history-collector, verification-worker, recovery-worker) until SIGTERM/SIGINT."""
    from services.settings import WorkerSettings
    from services.worker.health import HealthPortUnavailable
    from services.worker.main import run_worker

    settings = WorkerSettings()
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    try:
        _run_until_signal(run_worker(args.name, settings, stop), stop)
    except ProducerFenced:
        transactional_id = f"{settings.group_id or args.name}.{settings.instance_id}"
        print(
            f"error: Kafka fenced this worker: another process started with its transactional id "
            f"{transactional_id!r}. Each running instance of a worker needs its own APIHUB_INSTANCE_ID "
            "(default: the host name, so two on one host clash); keep it across restarts, so a restarted "
            "instance fences its killed predecessor (docs/WORKERS.md)",
            file=sys.stderr,
        )
        return 2
    except HealthPortUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return port


def _bootstrap(text: str) -> str:
    """A ``--bootstrap-servers`` value: broker addresses as Kafka's clients read them."""
    try:
        return bootstrap_servers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_history_collect(args: argparse.Namespace) -> int:
    """Publish a history job and follow its progress until done (0), dead-lettered (1) or timed out (2)."""
    from services.history.collect import make_job, run_collect
    from services.settings import WorkerSettings
    from services.worker.errors import MalformedTask

    try:
        job = make_job(
            args.symbols, args.first_day, args.last_day, args.timeframe, args.provider, timeout_s=args.timeout
        )
    except MalformedTask as exc:
        print(f"apihub history collect: error: {exc}", file=sys.stderr)
        return 2
    return run_collect(WorkerSettings(), job, args.timeout, sys.stderr)


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Run the broker sandbox until SIGTERM/SIGINT."""
    from services.sandbox.app import serve
    from services.sandbox.settings import SandboxSettings, reference_table

    if args.settings:
        print(reference_table(), end="")
        return 0
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = SandboxSettings(**overrides)
    configure_logging("INFO")
    stop = asyncio.Event()

    async def main() -> None:
        task = asyncio.create_task(serve(settings))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if task.done():  # it could not start (its port is taken): say why instead of waiting for a signal
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        _run_until_signal(main(), stop)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fix = "another --port (or APIHUB_SANDBOX_PORT for make up)"
        else:
            fix = "an address of this host with --host"
        print(
            f"error: the sandbox cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            f"choose {fix}",
            file=sys.stderr,
        )
        return 2
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create or verify the declared topics; exit 1 on drift or a topic Kafka refused."""
    from services.kafka_client import client_kwargs
    from services.topics import caller_topic_specs, ensure_topics, load_topics

    settings = ClientSettings()
    kafka = settings.kafka
    bootstrap = args.bootstrap_servers or kafka.bootstrap_servers
    specs = load_topics(rename=settings.topic_names())  # under the names the settings give them
    # api.requests.<caller>, if configured, each made like the request topic
    specs += caller_topic_specs(specs, sorted(kafka.caller_topics), like=kafka.request_topic)
    report = asyncio.run(ensure_topics(bootstrap, specs, client_kwargs=client_kwargs(kafka)))
    for name in report.created:
        print(f"created   {name}")
    for name in report.unchanged:
        print(f"ok        {name}")
    for line in report.drift:
        print(f"DRIFT     {line}")
    for line in report.refused:
        print(f"REFUSED   {line}")
    counts = f"{len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drifted"
    print(counts + (f", {len(report.refused)} refused" if report.refused else ""))
    return 1 if report.drift or report.refused else 0


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


def _param(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {pair!r} is not KEY=VALUE")
    return key, value


def _caller(name: str) -> str:
    if not CALLER_NAME.match(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a caller name (1-64 of A-Z a-z 0-9 . _ / -, starting with a letter or digit)"
        )
    return name


def _seconds(text: str) -> float:
    """A timeout: a positive, finite number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TASK_S:  # NaN compares false too
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {MAX_TASK_S:.0f} seconds")
    return value


def _idempotency_key(text: str) -> str:
    if not 0 < len(text) <= MAX_IDEMPOTENCY_KEY:
        raise argparse.ArgumentTypeError(f"an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def cmd_call(args: argparse.Namespace) -> int:
    """Send one request through the hub and print the response (0 ok, 1 another status, 2 no answer, Kafka
    not reachable, or a request refused before it is sent)."""
    from hubclient import HubClient, HubError
    from services.kafka_client import client_kwargs

    keys = [key for key, _ in args.params]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:  # dict() would keep the last one silently, and the call would ask for something else
        print(
            f"apihub call: error: parameter {', '.join(repeated)} given more than once; give each KEY once",
            file=sys.stderr,
        )
        return 2
    settings = ClientSettings()
    params = dict(args.params)

    async def main() -> int:
        try:
            async with HubClient.connect(
                settings.kafka.bootstrap_servers,
                caller=args.caller,
                request_topic=settings.kafka.request_topic,
                reply_topic=settings.kafka.response_topic,
                client_options=client_kwargs(settings.kafka),
            ) as hub:
                response = await hub.submit(
                    args.provider,
                    args.tr_id,
                    params,
                    timeout=args.timeout,
                    priority=args.priority,
                    credential=args.credential,
                    idempotency_key=args.idempotency_key,
                )
        except HubError as exc:
            if isinstance(exc.__cause__, KafkaError):  # not connected: main() says so, with the hint
                raise exc.__cause__ from None
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(orjson.dumps(response.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return 0 if response.ok else 1

    return asyncio.run(main())


def cmd_feed(args: argparse.Namespace) -> int:
    """Publish the sandbox market's ticks to market.ticks: one day (--once/--day) or follow the clock."""
    from services.kafka_client import client_kwargs
    from services.sandbox.feed import publish_day, run_feed, sandbox_market
    from services.sandbox.settings import FeedSettings, SandboxSettings

    base = SandboxSettings()
    security = client_kwargs(ClientSettings().kafka)  # the feed's principal: APIHUB_KAFKA__SECURITY_*
    updates = {
        "bootstrap_servers": args.bootstrap_servers or ClientSettings().kafka.bootstrap_servers,
        "topic": args.topic,
        "symbols": args.symbols,
        "day": args.day,
        "speed": args.speed,
        "gaps": args.gap,
        "gap_rate": args.gap_rate,
        "corrupt_rate": args.corrupt_rate,
        "seed": args.seed,
    }
    try:
        feed = FeedSettings.model_validate(
            {**base.feed.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as exc:
        for error in validation_errors(exc):
            print(f"apihub feed: error: {_feed_problem(error, args)}", file=sys.stderr)
        return 2
    settings = base.model_copy(update={"feed": feed})
    market = sandbox_market(settings)
    if feed.day is not None and not market.is_trading_day(feed.day):
        first = market.history_start.isoformat()
        print(
            f"apihub feed: error: --day {feed.day.isoformat()}: not a trading day of the sandbox market "
            f"(a weekday from {first} on, not one of APIHUB_SANDBOX__MARKET_HOLIDAYS)",
            file=sys.stderr,
        )
        return 2
    configure_logging("INFO")
    stop = asyncio.Event()
    try:
        if args.once or args.day:

            async def main() -> None:
                report = await publish_day(
                    settings, feed.bootstrap_servers, stop=stop, market=market, client_options=security
                )
                print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())

            _run_until_signal(main(), stop)
        else:
            _run_until_signal(run_feed(settings, stop, market=market, client_options=security), stop)
    except UnknownTopicOrPartitionError:
        print(
            f"apihub feed: error: Kafka at {feed.bootstrap_servers} has no topic {feed.topic!r}; "
            "apihub topics ensure creates the declared topics (or name another with --topic)",
            file=sys.stderr,
        )
        return 2
    return 0


#: The ``apihub feed`` flag behind each feed setting, and its attribute on the parsed arguments.
FEED_FLAGS = {
    "bootstrap_servers": ("--bootstrap-servers", "bootstrap_servers"),
    "topic": ("--topic", "topic"),
    "symbols": ("--symbols", "symbols"),
    "day": ("--day", "day"),
    "speed": ("--speed", "speed"),
    "gaps": ("--gap", "gap"),
    "gap_rate": ("--gap-rate", "gap_rate"),
    "corrupt_rate": ("--corrupt-rate", "corrupt_rate"),
    "seed": ("--seed", "seed"),
}


def _feed_problem(error: Any, args: argparse.Namespace) -> str:
    """One refused feed setting in the words of its flag: ``--gap '005930@25:00-26:00': start: ...``."""
    loc, reason = tuple(error["loc"]), validation_message(error)
    known = FEED_FLAGS.get(str(loc[0])) if loc else None
    if known is None:
        return reason
    flag, attribute = known
    value = getattr(args, attribute)
    if flag == "--gap" and len(loc) > 1 and isinstance(loc[1], int):
        value, loc = value[loc[1]], loc[1:]
    inside = ".".join(str(part) for part in loc[1:])
    shown = " ".join(value) if isinstance(value, list) else str(value)
    return f"{flag} {shown}: {inside + ': ' if inside else ''}{reason}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Send the demo workload through the hub and print a summary."""
    from services.demo import run_demo

    sandbox_url = args.sandbox_url or os.environ.get("SANDBOX_URL")
    # A topic the loop just created may report "not leader" to the first produce; aiokafka retries it.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    return asyncio.run(
        run_demo(ClientSettings(), rounds=args.rounds, repair=not args.no_repair, sandbox_url=sandbox_url)
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    """Check an env file against the gateway's and the workers' settings (0 ok, 1 problems, 2 unreadable)."""
    from services.config_check import run

    return run(args.file, sys.stdout, sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``apihub``."""
    parser = argparse.ArgumentParser(prog="apihub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="run a gateway instance").set_defaults(func=cmd_gateway)
    worker = sub.add_parser("worker", help="run a worker that calls the brokers through the hub")
    worker.add_argument("name", choices=["history-collector", "verification-worker", "recovery-worker"])
    worker.set_defaults(func=cmd_worker)
    history = sub.add_parser("history", help="candle history jobs for the history-collector")
    history_actions = history.add_subparsers(dest="action", required=True)
    collect = history_actions.add_parser(
        "collect", help="publish a history job and follow its progress (exit 0 done, 1 failed, 2 timeout)"
    )
    collect.add_argument("--symbols", nargs="+", required=True, metavar="CODE", help="six-character codes")
    collect.add_argument("--from", dest="first_day", type=_day, required=True, metavar="YYYY-MM-DD")
    collect.add_argument("--to", dest="last_day", type=_day, required=True, metavar="YYYY-MM-DD")
    collect.add_argument("--timeframe", required=True, choices=["1m", "1d"])
    collect.add_argument("--provider", default="KIS", choices=["KIS", "KIWOOM"])
    collect.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="seconds the job may take, worker included (default 600)",
    )
    collect.set_defaults(func=cmd_history_collect)
    sandbox = sub.add_parser("sandbox", help="run the KIS/Kiwoom sandbox")
    sandbox.add_argument("--host", help="address to listen on (default APIHUB_SANDBOX__HOST, else 127.0.0.1)")
    sandbox.add_argument(
        "--port", type=_port, help="TCP port, 0-65535 (default APIHUB_SANDBOX__PORT, else 18080)"
    )
    sandbox.add_argument(
        "--settings",
        action="store_true",
        help="print every APIHUB_SANDBOX__ variable with its default and meaning (docs/SANDBOX.md), and exit",
    )
    sandbox.set_defaults(func=cmd_sandbox)
    topics = sub.add_parser("topics", help="manage the declared topics")
    topics.add_argument("action", choices=["ensure"])
    topics.add_argument(
        "--bootstrap-servers", type=_bootstrap, help="default: APIHUB_KAFKA__BOOTSTRAP_SERVERS"
    )
    topics.set_defaults(func=cmd_topics)
    schemas = sub.add_parser("schemas", help="generate or check schemas/*.schema.json")
    schemas.add_argument("action", choices=["generate", "check"])
    schemas.set_defaults(func=cmd_schemas)
    call = sub.add_parser(
        "call",
        help="send one request through the hub",
        description="Send one request through the hub and print the answer as JSON. Exit 0 ok, 1 another "
        "status, 2 no answer within --timeout, Kafka not reachable, or a request refused before it is sent "
        "(a tr_id not in the catalog, a required parameter missing, a KEY given twice).",
    )
    call.add_argument("provider", choices=["KIS", "KIWOOM"])
    call.add_argument("tr_id")
    call.add_argument("params", nargs="*", type=_param, metavar="KEY=VALUE")
    call.add_argument("--timeout", type=_seconds, default=10.0, help="seconds (default 10)")
    call.add_argument("--priority", default="interactive", choices=["interactive", "normal", "bulk"])
    call.add_argument("--caller", type=_caller, default="apihub-cli")
    call.add_argument(
        "--credential",
        metavar="NAME",
        help="the pool member to call with (account and order calls must name one; reads default to the "
        "member that can serve soonest)",
    )
    call.add_argument(
        "--idempotency-key",
        metavar="KEY",
        type=_idempotency_key,
        help="names an order across attempts: run the same order again with the same key and the hub sends "
        "it at most once (the first attempt's answer is printed again)",
    )
    call.set_defaults(func=cmd_call)
    feed = sub.add_parser("feed", help="publish the sandbox market's ticks to market.ticks")
    feed.add_argument("--bootstrap-servers", type=_bootstrap, help="default: APIHUB_KAFKA__BOOTSTRAP_SERVERS")
    feed.add_argument("--topic")
    feed.add_argument("--symbols", nargs="+")
    feed.add_argument("--day", type=_day, help="YYYY-MM-DD: publish that day and stop")
    feed.add_argument("--once", action="store_true", help="publish today up to now and stop")
    feed.add_argument(
        "--speed", type=float, help="replay speed factor for --once/--day; 0 = as fast as possible"
    )
    feed.add_argument("--gap", action="append", metavar="SYMBOL@HH:MM-HH:MM", help="an interval left out")
    feed.add_argument("--gap-rate", type=float, help="share of session minutes also left out at random")
    feed.add_argument("--corrupt-rate", type=float, help="share of ticks published with a corrupted value")
    feed.add_argument("--seed", type=int)
    feed.set_defaults(func=cmd_feed)
    config = sub.add_parser("config", help="deployment configuration")
    config_actions = config.add_subparsers(dest="action", required=True)
    check = config_actions.add_parser(
        "check",
        help="validate an env file: what is missing, malformed or unknown, per variable; secrets never "
        "printed (exit 0 ok, 1 problems, 2 unreadable)",
    )
    check.add_argument("file", nargs="?", default=".env", help="the env file (default .env)")
    check.set_defaults(func=cmd_config_check)
    demo = sub.add_parser("demo", help="run the demo workload and print a summary")
    demo.add_argument("--rounds", type=_positive_int, default=2, help="rounds of the workload (default 2)")
    demo.add_argument("--no-repair", action="store_true", help="skip the repair loop (workers on the hub)")
    demo.add_argument("--sandbox-url", help="the sandbox, for the referee's figures (default: $SANDBOX_URL)")
    demo.set_defaults(func=cmd_demo)
    add_catalog_parser(sub)
    add_credentials_parser(sub)
    add_status_parser(sub)
    add_audit_parser(sub)
    add_replay_parser(sub)
    return parser


#: Kafka errors that mean the client could not talk to the brokers (down, wrong address, or a listener that
#: wants SASL or TLS), as opposed to brokers that answered and refused.
NOT_CONNECTED = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.UnrecognizedBrokerVersion,
    kafka_errors.KafkaProtocolError,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
)
NOT_AUTHORIZED = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
)


def kafka_failure(exc: KafkaError, what: str | None = None) -> str:
    """The ``error:`` line for a Kafka error that ended a command; ``what`` is the client's own account of
    it (a hub client's), said instead of Kafka's."""
    from services.kafka_client import SECURITY_HINT

    if isinstance(exc, UnknownTopicOrPartitionError):
        return (
            f"error: a topic this command uses does not exist ({what or exc}); "
            "apihub topics ensure creates the declared topics"
        )
    if isinstance(exc, NOT_AUTHORIZED):
        return f"error: Kafka refused this principal ({what or exc}); {SECURITY_HINT}"
    if isinstance(exc, ProducerFenced):
        return f"error: Kafka fenced this producer: another process uses its transactional id ({exc})"
    if isinstance(exc, NOT_CONNECTED):
        said = what or f"Kafka is not reachable ({exc})"
        return f"error: {said}; is the stack up (make up) and the address right? And {SECURITY_HINT}"
    return f"error: Kafka refused the command ({what or f'{type(exc).__name__}: {exc}'})"


def _without_fallback_output(library: str) -> None:
    """Keep ``library``'s log records off Python's last-resort stderr handler in a command that configures
    no logging (``apihub call`` against a Kafka that is down printed aiokafka's ``Unable connect to ...``
    above its own ``error:`` line, which says the same); a command that configures logging (the gateway,
    a worker, the feed) still gets them through the root logger."""
    logger = logging.getLogger(library)
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``apihub`` console script."""
    args = build_parser().parse_args(argv)
    _without_fallback_output("aiokafka")
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # the reader left (apihub catalog list | head): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail again
        return 128 + signal.SIGPIPE
    except SettingsInvalid as exc:  # a variable or credentials file the process cannot run with
        print(exc.report(), file=sys.stderr)
        return 2
    except KafkaError as exc:  # the common operator mistake: the stack is not up or the address is wrong
        print(kafka_failure(exc), file=sys.stderr)
        return 2
    except HubError as exc:  # a hub client's connection failed (its cause is Kafka's error)
        if not isinstance(exc.__cause__, KafkaError):
            raise
        print(kafka_failure(exc.__cause__, str(exc)), file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
