"""``apihub replay``: a run, from its options: read, plan, send (or not), compare, report.

Exit codes: 0 every replayed answer is the same (or a dry run); 1 a difference or a request without an
answer; 2 bad input, a refused target (a hub without ``--live``, a URL that is not the sandbox), named
ids not in the range, or an unreachable Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TextIO

import orjson
from redis.exceptions import RedisError

from hubclient.models import ApiRequest
from hubclient.transport import KafkaTransport
from services.audit import AuditError
from services.audit.collect import collect
from services.audit.output import open_output, wrap_items
from services.audit.progress import Progress, quiet
from services.audit.timerange import describe
from services.logs import configure_logging
from services.replay import ReplayError
from services.replay.compare import compare
from services.replay.options import ReplayOptions, add_arguments, options_from
from services.replay.plan import Plan, make_plan, replay_request
from services.replay.report import Outcome, count_lines, outcome_lines, outcome_row
from services.replay.sender import ReplaySender


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``replay`` command on ``apihub``'s subparsers."""
    replay = sub.add_parser(
        "replay",
        help="send a time range of recorded requests again (to the sandbox by default) and compare the "
        "answers with the recorded ones",
        description="Re-send recorded requests of a time range (bare times are KST) with new ids and the "
        "caller replay/<caller>. --target sandbox (default): through a gateway of the replay's own, in its "
        "own consumer group, calling only the sandbox. --target hub: into a running hub's request topic, "
        "which may reach a live broker, so only with --live. Orders are never sent unless named with "
        "--include-order. Exit 0 same, 1 differences, 2 refused or bad input.",
    )
    add_arguments(replay)
    replay.set_defaults(func=cmd_replay)


@asynccontextmanager
async def _sender(options: ReplayOptions) -> AsyncIterator[ReplaySender]:
    """A started sender on the target's topics (the sandbox hub running behind it when that is the target)."""
    target = options.target
    bootstrap = options.source.bootstrap_servers
    if target.kind == "sandbox":
        # The replay's own gateway (and its HTTP client) loads only when a replay runs: `apihub` itself, which
        # the workers start with, must not import the gateway.
        from services.replay.hub import check_sandbox, ensure_hub_topics, gateway_settings, sandbox_hub

        await check_sandbox(target.sandbox_url)
        await ensure_hub_topics(bootstrap, target.names, options.source.client_options)
        settings = gateway_settings(
            target.names,
            bootstrap_servers=bootstrap,
            redis_url=target.redis_url,
            sandbox_url=target.sandbox_url,
            security=target.security,
        )
        transport = KafkaTransport(
            bootstrap,
            request_topic=target.names.requests,
            reply_topic=target.names.responses,
            client_id="replay",
            client_options=options.source.client_options,
        )
        async with sandbox_hub(settings), ReplaySender(transport) as sender:
            yield sender
    else:
        transport = KafkaTransport(
            bootstrap,
            request_topic=target.request_topic,
            reply_topic=target.reply_topic,
            client_id="replay",
            client_options=options.source.client_options,
        )
        async with ReplaySender(transport) as sender:
            yield sender


async def _send(options: ReplayOptions, plan: Plan, progress: Progress) -> list[Outcome]:
    outcomes = {id(d): Outcome(d) for d in plan.decisions}
    sends = plan.sends
    async with _sender(options) as sender:
        topic, partition = sender.reply_address
        keep_credential = options.target.kind == "hub"

        def builder(recorded: ApiRequest) -> Callable[[], ApiRequest]:
            return lambda: replay_request(
                recorded,
                now_ms=int(time.time() * 1000),
                timeout_s=options.timeout_s,
                reply_topic=topic,
                reply_partition=partition,
                keep_credential=keep_credential,
            )

        builds = []
        for decision in sends:
            recorded = decision.exchange.request.request
            assert recorded is not None  # a decision to send has a readable request
            builds.append(builder(recorded))
        results = await sender.send_all(
            builds, concurrency=options.concurrency, max_s=options.max_send_s, progress=progress
        )
    for decision, sent in zip(sends, results, strict=True):
        recorded_answer = decision.exchange.response
        differences = []
        if sent is not None and sent.response is not None:
            old = recorded_answer.response if recorded_answer is not None else None
            differences = compare(old, sent.response, options.ignore)
        outcomes[id(decision)] = Outcome(decision, sent, differences)
    return [outcomes[id(d)] for d in plan.decisions]


async def run_replay(options: ReplayOptions, stdout: TextIO, stderr: TextIO) -> int:
    """Read, plan, send (unless a dry run), compare and report; returns the exit code."""
    target = open_output(options.output)
    try:
        return await _replay(options, target, stdout, stderr)
    finally:
        if target is not None:
            target.close()


async def _replay(options: ReplayOptions, target: TextIO | None, stdout: TextIO, stderr: TextIO) -> int:
    progress = Progress(stderr) if options.show_progress else quiet()
    collected = await collect(
        options.source,
        options.time_range,
        limits=options.limits,
        progress=progress,
        grace_ms=options.grace_ms,
    )
    exchanges = options.filters.apply(collected.joined.exchanges)
    plan = make_plan(exchanges, options.named, max_requests=options.max_requests)
    if plan.unknown_names:
        raise ReplayError("--include-order names requests not in the range: " + ", ".join(plan.unknown_names))
    if options.dry_run or not plan.sends:
        outcomes = [Outcome(d, dry_run=options.dry_run) for d in plan.decisions]
    else:
        outcomes = await _send(options, plan, progress)
    header = [
        *wrap_items("replay  ", describe(options.time_range)),
        *wrap_items("from    ", [f"{options.source.requests_topic} ⋈", *options.source.responses_topics]),
        *wrap_items("target  ", options.target.describe()),
        *(["dry run  nothing sent: what would be sent is listed"] if options.dry_run else []),
    ]
    if collected.truncated:
        header += wrap_items("WARNING ", [f"read stopped early: {collected.truncated}"])
    out = target or stdout
    if options.output_format == "jsonl":
        for outcome in outcomes:
            out.write(orjson.dumps(outcome_row(outcome)).decode() + "\n")
        (stdout if target else stderr).write("\n".join([*header, *count_lines(outcomes)]) + "\n")
    else:
        body = [line for outcome in outcomes for line in outcome_lines(outcome)]
        out.write("\n".join([*header, *count_lines(outcomes), *(["", *body] if body else [])]) + "\n")
    troubled = any(o.verdict not in ("same", "skipped", "would send") for o in outcomes)
    return 1 if troubled else 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``apihub replay``: 0 same, 1 differences or no answer, 2 refused or bad input."""
    # The replay gateway's warnings as JSON lines on stderr; aiokafka's chatter about a new topic kept out.
    configure_logging("WARNING")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        options = options_from(args, int(time.time() * 1000))
        return asyncio.run(run_replay(options, sys.stdout, sys.stderr))
    except AuditError as exc:
        print(f"apihub replay: error: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:  # the replay hub's Redis (--redis-url), which the gateway shares
        print(f"apihub replay: error: Redis is not reachable ({exc}); check --redis-url", file=sys.stderr)
        return 2
