"""``apihub audit``: the arguments, and a run from them to the table, JSONL or CSV.

Exit codes: 0 done; 2 bad input or an unreachable Kafka (printed); 3 the read stopped at a limit
(``--max-records``/``--max-seconds``), so what was shown is partial.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from services.audit import AuditError
from services.audit.collect import DEFAULT_GRACE_MS, Limits, Source, collect
from services.audit.join import OUTCOMES, Filters
from services.audit.output import open_output, summary_lines, table_lines, write_csv, write_jsonl
from services.audit.progress import Progress, quiet
from services.audit.stats import summarize
from services.audit.timerange import FORMS, TimeRange, parse_duration_ms, resolve_range
from services.kafka_client import client_kwargs
from services.settings import ClientSettings, bootstrap_servers

EXIT_PARTIAL = 3


@dataclass(frozen=True)
class AuditOptions:
    """Everything a run needs, decided from the arguments."""

    source: Source
    time_range: TimeRange
    filters: Filters
    output_format: str = "table"  # table | jsonl | csv
    output: Path | None = None  # None: stdout
    rows: int = 40
    with_data: bool = False
    limits: Limits = field(default_factory=Limits)
    grace_ms: int = DEFAULT_GRACE_MS
    show_progress: bool = True


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the log is and which part of it: shared by ``audit`` and ``replay``."""
    when = parser.add_argument_group(
        "range",
        "times in KST or UTC: " + FORMS + ". A time without an offset is KST (+09:00). "
        "Without --from or --last: the last 15 minutes.",
    )
    when.add_argument("--from", dest="start", metavar="TIME", help="start (inclusive)")
    when.add_argument("--to", dest="end", metavar="TIME", help="end (exclusive; default now)")
    when.add_argument("--last", metavar="DURATION", help="the DURATION before --to, e.g. 15m, 2h, 1d")
    what = parser.add_argument_group("filters (repeat a flag for several values)")
    what.add_argument("--provider", action="append", type=str.upper, choices=["KIS", "KIWOOM"], default=[])
    what.add_argument("--tr-id", action="append", default=[], metavar="PATTERN", help="e.g. FHKST03*")
    what.add_argument("--caller", action="append", default=[], metavar="PATTERN", help="e.g. history-*")
    where = parser.add_argument_group("topics and bounds")
    where.add_argument("--bootstrap-servers", help="default: APIHUB_KAFKA__BOOTSTRAP_SERVERS")
    where.add_argument("--requests-topic", help="default: APIHUB_KAFKA__REQUEST_TOPIC (api.requests)")
    where.add_argument(
        "--responses-topic",
        action="append",
        default=[],
        help="default: APIHUB_KAFKA__RESPONSE_TOPIC (api.responses); repeat for extra reply topics",
    )
    where.add_argument(
        "--grace", default="2m", metavar="DURATION", help="how long after --to answers are looked for (2m)"
    )
    where.add_argument("--max-records", type=int, default=200_000, help="records kept per topic (200000)")
    where.add_argument("--max-seconds", type=float, default=120.0, help="seconds of reading (120)")
    where.add_argument("--quiet", action="store_true", help="no progress on stderr")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``audit`` command on ``apihub``'s subparsers."""
    audit = sub.add_parser(
        "audit",
        help="requests joined with their answers over a time range: table, JSONL or CSV, latency "
        "percentiles, status mix, unanswered requests",
        description="Join api.requests and api.responses by correlation id over a time range (bare times "
        "are KST), with a consumer of its own (no group). Exit 0 done, 2 bad input, 3 read cut at a limit.",
    )
    add_source_arguments(audit)
    audit.add_argument(
        "--status", action="append", default=[], choices=OUTCOMES, metavar="STATUS", help=", ".join(OUTCOMES)
    )
    audit.add_argument("--dlq-topic", help="dead letters to explain unanswered requests (api.requests.dlq)")
    audit.add_argument("--no-dlq", action="store_true", help="do not read the dead-letter topic")
    out = audit.add_argument_group("output")
    out.add_argument("--format", dest="output_format", choices=["table", "jsonl", "csv"], default="table")
    out.add_argument("--output", type=Path, help="write there instead of stdout")
    out.add_argument("--rows", type=int, default=40, help="table rows shown (40; 0: summary only)")
    out.add_argument("--with-data", action="store_true", help="JSONL/CSV: the answer's data too (redacted)")
    audit.set_defaults(func=cmd_audit)


def source_from(args: argparse.Namespace, settings: ClientSettings, *, dlq: bool) -> Source:
    """The topics named by the arguments, defaulting to the settings'; raises ``AuditError`` for a
    ``--bootstrap-servers`` that is no list of broker addresses."""
    kafka = settings.kafka
    if args.bootstrap_servers:
        try:
            bootstrap_servers(args.bootstrap_servers)
        except ValueError as exc:
            raise AuditError(f"--bootstrap-servers: {exc}") from None
    dlq_topic = None
    if dlq and not getattr(args, "no_dlq", False):
        dlq_topic = getattr(args, "dlq_topic", None) or kafka.dlq_topic
    return Source(
        bootstrap_servers=args.bootstrap_servers or kafka.bootstrap_servers,
        requests_topic=args.requests_topic or kafka.request_topic,
        responses_topics=tuple(args.responses_topic) or (kafka.response_topic,),
        dlq_topic=dlq_topic,
        client_options=client_kwargs(kafka),
    )


def options_from(args: argparse.Namespace, now_ms: int) -> AuditOptions:
    """The options of an ``apihub audit`` command line; raises ``AuditError`` on bad input."""
    if not (args.max_records > 0 and 0 < args.max_seconds < math.inf):  # NaN would lift the time bound
        raise AuditError("--max-records and --max-seconds must be positive, finite numbers")
    try:
        filters = Filters(tuple(args.provider), tuple(args.tr_id), tuple(args.caller), tuple(args.status))
    except ValueError as exc:
        raise AuditError(str(exc)) from None
    return AuditOptions(
        source=source_from(args, ClientSettings(), dlq=True),
        time_range=resolve_range(args.start, args.end, args.last, now_ms),
        filters=filters,
        output_format=args.output_format,
        output=None if args.output in (None, Path("-")) else args.output,
        rows=max(0, args.rows),
        with_data=args.with_data,
        limits=Limits(args.max_records, args.max_seconds),
        grace_ms=parse_duration_ms(args.grace),
        show_progress=not args.quiet,
    )


def _describe_filters(filters: Filters) -> str:
    parts = [
        f"{name} {','.join(values)}"
        for name, values in (
            ("provider", filters.providers),
            ("tr_id", filters.tr_ids),
            ("caller", filters.callers),
            ("status", filters.outcomes),
        )
        if values
    ]
    return "; ".join(parts) or "no filter"


async def run_audit(options: AuditOptions, stdout: TextIO, stderr: TextIO) -> int:
    """Read, join, filter and show; returns the exit code."""
    target = open_output(options.output, newline="")
    try:
        return await _audit(options, target, stdout, stderr)
    finally:
        if target is not None:
            target.close()


async def _audit(options: AuditOptions, target: TextIO | None, stdout: TextIO, stderr: TextIO) -> int:
    progress = Progress(stderr) if options.show_progress else quiet()
    collected = await collect(
        options.source,
        options.time_range,
        limits=options.limits,
        progress=progress,
        grace_ms=options.grace_ms,
    )
    everything = collected.joined.exchanges
    kept = options.filters.apply(everything)
    source = options.source
    topics = [f"{source.requests_topic} ⋈ {', '.join(source.responses_topics)}"]
    if source.dlq_topic:
        topics.append(f"(dead letters: {source.dlq_topic})")
    summary = summary_lines(
        summarize(kept),
        kept,
        time_range=options.time_range,
        read_total=len(everything),
        topics=topics,
        filters=_describe_filters(options.filters),
        unmatched_answers=collected.joined.unmatched_answers,
        truncated=collected.truncated,
    )
    out = target or stdout
    if options.output_format == "table":
        rows = table_lines(kept, limit=options.rows)
        out.write("\n".join([*summary, *(["", *rows] if rows else [])]) + "\n")
    else:
        writer = write_jsonl if options.output_format == "jsonl" else write_csv
        writer(kept, out, with_data=options.with_data)
        # rows on stdout keep it machine-readable: the summary goes to stderr then
        (stdout if target else stderr).write("\n".join(summary) + "\n")
    if options.output is not None:
        print(f"wrote {len(kept):,} rows to {options.output}", file=stdout if target else stderr)
    return EXIT_PARTIAL if collected.truncated else 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``apihub audit``: 0 done, 2 bad input, 3 partial (a read limit was reached)."""
    try:
        options = options_from(args, int(time.time() * 1000))
        return asyncio.run(run_audit(options, sys.stdout, sys.stderr))
    except AuditError as exc:
        print(f"apihub audit: error: {exc}", file=sys.stderr)
        return 2
