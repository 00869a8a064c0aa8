"""How an audit is shown: an 80-column table with a summary, or one row per exchange as JSONL or CSV.

Every value shown passes ``redact``: parameters and data lose their secret fields, token calls and lent
WebSocket credentials their parameters and data whole. Times are KST.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from services.audit import AuditError
from services.audit.join import PENDING, UNANSWERED, Exchange
from services.audit.redact import redact, safe_data, safe_params
from services.audit.stats import PERCENTILES, Summary
from services.audit.timerange import TimeRange, describe, format_kst, iso_kst
from services.catalog_cli import fit

WIDTH = 80
_PROVIDER_W, _TR_ID_W, _STATUS_W, _MS_W, _ID_W = 6, 13, 15, 6, 8

#: The columns of a JSONL object or CSV row, in order (``data`` only with ``with_data``).
FIELDS = (
    "request_id",
    "requested_at",
    "requested_at_ms",
    "answered_at_ms",
    "latency_ms",
    "outcome",
    "provider",
    "tr_id",
    "caller",
    "priority",
    "kind",
    "reason",
    "http_status",
    "provider_code",
    "message",
    "queued_ms",
    "upstream_ms",
    "attempts",
    "gateway",
    "extra_answers",
    "dead_letter",
    "problem",
    "request_position",
    "response_position",
    "params",
)


def _spans_days(exchanges: Sequence[Exchange]) -> bool:
    days = {format_kst(e.request.at_ms)[:10] for e in exchanges}
    return len(days) > 1


def time_cell(at_ms: int, *, with_day: bool) -> str:
    """``09:01:02.345``, or ``11-27 09:01:02`` when the rows span several days (KST)."""
    text = format_kst(at_ms, ms=True)
    return f"{text[5:10]} {text[11:19]}" if with_day else text[11:]


def latency_cell(latency_ms: int | None) -> str:
    """Milliseconds up to 99,999, then whole seconds (``123s``); ``-`` without an answer."""
    if latency_ms is None:
        return "-"
    return str(latency_ms) if latency_ms < 100_000 else f"{latency_ms // 1000}s"


def table_lines(exchanges: Sequence[Exchange], *, limit: int) -> list[str]:
    """A header and up to ``limit`` rows of at most 79 columns (id: the request id's last 8 digits)."""
    if limit <= 0 or not exchanges:
        return []
    with_day = _spans_days(exchanges)
    time_w = 14 if with_day else 12
    caller_w = WIDTH - 1 - (time_w + _PROVIDER_W + _TR_ID_W + _STATUS_W + _MS_W + _ID_W + 6)

    def line(cells: Sequence[str]) -> str:
        when, provider, tr_id, caller, status, ms, rid = cells
        return " ".join(
            (
                fit(when, time_w),
                fit(provider, _PROVIDER_W),
                fit(tr_id, _TR_ID_W),
                fit(caller, caller_w),
                fit(status, _STATUS_W),
                ms.rjust(_MS_W),
                rid,
            )
        ).rstrip()

    lines = [line(("time (KST)", "prov", "tr_id", "caller", "status", "ms", "id"))]
    for exchange in exchanges[:limit]:
        request = exchange.request
        lines.append(
            line(
                (
                    time_cell(request.at_ms, with_day=with_day),
                    request.provider,
                    request.tr_id,
                    request.caller,
                    exchange.outcome,
                    latency_cell(exchange.latency_ms),
                    (request.request_id or "?")[-_ID_W:],
                )
            )
        )
    if len(exchanges) > limit:
        lines.append(f"... {len(exchanges) - limit:,} more rows (--rows N, or --format jsonl for all)")
    return lines


def wrap_items(label: str, items: Iterable[str], width: int = WIDTH) -> list[str]:
    """``label`` and the items two spaces apart, continued on lines indented past the label, each line
    shorter than ``width`` columns where the items allow."""
    indent = " " * (len(label) + 1)
    lines: list[str] = []
    current = label
    for item in items:
        if current == label:
            current = f"{label} {item}"
        elif len(current) + 2 + len(item) > width - 1:
            lines.append(current)
            current = indent + item
        else:
            current = f"{current}  {item}"
    lines.append(current)
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def summary_lines(
    summary: Summary,
    exchanges: Sequence[Exchange],
    *,
    time_range: TimeRange,
    read_total: int,
    topics: Sequence[str],
    filters: str,
    unmatched_answers: int,
    truncated: str | None,
) -> list[str]:
    """The summary: range, counts, status mix, percentiles, then every unanswered and pending request."""
    lines = [*wrap_items("audit   ", describe(time_range)), *wrap_items("topics  ", topics)]
    kept = f"requests {summary.total:,}"
    if summary.total != read_total:
        kept += f" of {read_total:,} read ({filters})"
    lines.append(kept)
    mix = [f"{o} {n:,} ({summary.share(o):.1f}%)" for o, n in summary.outcomes.items()]
    lines += wrap_items("status  ", mix or ["-"])
    for label, values in (("latency ", summary.latency_ms), ("upstream", summary.upstream_ms)):
        cells = [f"p{p} {_ms(values[p])}" for p in PERCENTILES]
        lines.append(f"{label} {'  '.join(cells)}")
    lines.append("         (latency: request to answer in the log; upstream: broker calls)")
    for outcome, what in ((UNANSWERED, "no answer, deadline passed"), (PENDING, "no answer yet")):
        missing = [e for e in exchanges if e.outcome == outcome]
        if missing:
            lines.append(f"{outcome} {len(missing):,} ({what}):")
            lines += [text for e in missing for text in _missing_lines(e)]
    notes = []
    if summary.extra_answers:
        notes.append(f"{summary.extra_answers:,} repeated answers (published more than once)")
    if unmatched_answers:
        notes.append(f"{unmatched_answers:,} answers to requests outside the range")
    lines += [f"note     {n}" for n in notes]
    if truncated is not None:
        lines.append(fit(f"WARNING  read stopped early: {truncated}", WIDTH - 1).rstrip())
        lines.append("         counts are partial; an answer not read leaves its request unanswered")
    return lines


def _missing_lines(exchange: Exchange) -> list[str]:
    request = exchange.request
    when = format_kst(request.at_ms)[11:]
    first = f"  {request.request_id or request.raw.position}  {when}  {request.provider} {request.tr_id}"
    detail = f"caller {request.caller}"
    if exchange.dead_letter is not None:
        detail += f"; dead-lettered: {exchange.dead_letter.reason}"
    elif request.problem is not None:
        detail += f"; {request.problem}"
    return [fit(first, WIDTH - 1).rstrip(), fit(f"      {detail}", WIDTH - 1).rstrip()]


def exchange_row(exchange: Exchange, *, with_data: bool = False) -> dict[str, Any]:
    """One exchange as a flat object (``FIELDS`` order), secrets redacted; ``data`` only ``with_data``."""
    request, recorded = exchange.request, exchange.request.request
    answer = exchange.response.response if exchange.response is not None else None
    params = recorded.params if recorded is not None else request.body.get("params")
    row: dict[str, Any] = {
        "request_id": request.request_id,
        "requested_at": iso_kst(request.at_ms),
        "requested_at_ms": request.at_ms,
        "answered_at_ms": exchange.response.at_ms if exchange.response is not None else None,
        "latency_ms": exchange.latency_ms,
        "outcome": exchange.outcome,
        "provider": request.provider,
        "tr_id": request.tr_id,
        "caller": request.caller,
        "priority": recorded.priority.value if recorded else None,
        "kind": request.kind,
        "reason": answer.reason if answer else None,
        "http_status": answer.http_status if answer else None,
        "provider_code": answer.provider_code if answer else None,
        "message": answer.message if answer else None,
        "queued_ms": answer.timing.queued_ms if answer else None,
        "upstream_ms": answer.timing.upstream_ms if answer else None,
        "attempts": answer.attempts if answer else None,
        "gateway": answer.gateway if answer else None,
        "extra_answers": exchange.extra_answers,
        "dead_letter": exchange.dead_letter.reason if exchange.dead_letter is not None else None,
        "problem": request.problem,
        "request_position": request.raw.position,
        "response_position": exchange.response.raw.position if exchange.response is not None else None,
        "params": safe_params(params, request.tr_id, request.kind),
    }
    if with_data:
        row["data"] = safe_data(answer.data if answer else None, request.tr_id, request.kind)
    clean: dict[str, Any] = redact(row)
    return clean


def write_jsonl(exchanges: Iterable[Exchange], out: TextIO, *, with_data: bool = False) -> int:
    """One JSON object a line; returns the number of lines written."""
    count = 0
    for exchange in exchanges:
        out.write(orjson.dumps(exchange_row(exchange, with_data=with_data)).decode() + "\n")
        count += 1
    return count


def write_csv(exchanges: Iterable[Exchange], out: TextIO, *, with_data: bool = False) -> int:
    """A header and one row per exchange (params and data as JSON text); returns the rows written."""
    columns = [*FIELDS, "data"] if with_data else list(FIELDS)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    count = 0
    for exchange in exchanges:
        row = exchange_row(exchange, with_data=with_data)
        for name in ("params", "data"):
            if name in row and row[name] is not None and not isinstance(row[name], str):
                row[name] = orjson.dumps(row[name]).decode()
        writer.writerow(row)
        count += 1
    return count


def open_output(path: Path | None, *, newline: str | None = None) -> TextIO | None:
    """``--output``'s file opened for writing (None: stdout), before anything is read, so a path that cannot
    be written is an ``AuditError`` at once rather than a traceback after the whole read."""
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8", newline=newline)
    except OSError as exc:
        raise AuditError(f"cannot write --output {path}: {exc.strerror or exc}") from None
