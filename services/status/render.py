"""One ``apihub status`` frame as plain text lines, at most ``width`` (80) columns each (pure).

Layout, top to bottom (about 18 lines, so a frame fits a 24-line terminal): a title with the time (KST)
and the interval the rates cover; the gateway (up or down, in-flight requests, consumer lag, owned
partitions) and its answers by status; PACING per provider (calls per second sent, the key's limit, the
share of it, the effective jitter budget J, the cap ``limit / (1 s + J)``, calls inside HTTP now, calls in
all); QUEUE depth per limit domain and priority; UPSTREAM per provider (latency p50/p99 over the interval,
errors per second and in all, token issuances, refusals and failures, refreshes that waited for another
holder's lock); REJECTED by pacing per provider and reason (in all, and ``+N`` in the interval); WORKERS
(tasks done, failed, malformed, tasks per second, output records). A service that is down shows as
``DOWN`` with the reason. ``-`` means "not known yet": rates need a second scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.status.view import PRIORITIES, GatewayView, StatusView, WorkerView
from services.urls import masked

WIDTH = 80
MAX_REJECTION_ROWS = 4


def count(value: float) -> str:
    """A total in at most five characters: ``987``, ``12345`` -> ``12.3k``, ``4.5M``."""
    if value < 10_000:
        return f"{value:.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def rate(value: float | None) -> str:
    """A per-second figure with one decimal, ``-`` when not known yet."""
    return "-" if value is None else f"{value:.1f}"


def millis(seconds: float | None) -> str:
    """Seconds shown in milliseconds (one decimal below 10 ms), ``-`` when not known."""
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def percent(share: float | None) -> str:
    """A share as a whole percentage, ``-`` when not known."""
    return "-" if share is None else f"{share * 100:.0f}%"


def clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns, a cut line ending in ``~``."""
    return line if len(line) <= width else line[: max(width - 1, 0)] + "~"


def _title(view: StatusView) -> str:
    when = view.at.strftime("%Y-%m-%d %H:%M:%S")
    over = "rates from the next frame" if view.interval_s is None else f"rates over {view.interval_s:.1f} s"
    return f"apihub status  {when} KST  {over}  Ctrl-C quits"


def _gateway_lines(gw: GatewayView) -> list[str]:
    if not gw.up:
        return [f"gateway  DOWN  {gw.error}  ({masked(gw.url)})"]
    lines = [
        f"gateway  up  {masked(gw.url)}  in-flight {count(gw.inflight)}  lag {count(gw.lag)}"
        f"  partitions {count(gw.partitions)}"
    ]
    mix = [f"ok {count(gw.answers.get('ok', 0.0))}"]
    mix += [f"{status} {count(n)}" for status, n in sorted(gw.answers.items()) if status != "ok" and n]
    lines.append(f"answers  {rate(gw.answers_per_s)}/s  " + "  ".join(mix))
    lines.append(
        f"{'PACING':<8}{'calls/s':>8}{'limit':>7}{'use':>6}{'jitter':>9}{'cap/s':>8}"
        f"{'in call':>9}{'calls':>8}"
    )
    for p in gw.pacing:
        limit = "-" if p.limit_per_s is None else f"{p.limit_per_s:.1f}"
        jitter = "-" if p.jitter_s is None else f"{millis(p.jitter_s)} ms"
        lines.append(
            f"{p.provider:<8}{rate(p.calls_per_s):>8}{limit:>7}{percent(p.share):>6}{jitter:>9}"
            f"{rate(p.cap_per_s):>8}{count(p.in_call):>9}{count(p.calls_total):>8}"
        )
    lines.append(f"{'QUEUE':<16}" + "".join(f"{name:>12}" for name in PRIORITIES))
    if not gw.queues:
        lines.append("  nothing queued yet")
    for domain, depths in gw.queues.items():
        lines.append(f"{domain:<16}" + "".join(f"{count(depths.get(name, 0.0)):>12}" for name in PRIORITIES))
    lines.append(
        f"{'UPSTREAM':<8}{'p50 ms':>8}{'p99 ms':>8}{'err/s':>7}{'errors':>8}"
        f"{'tokens':>8}{'refused':>9}{'failed':>8}{'lock waits':>12}"
    )
    tokens = {t.provider: t for t in gw.tokens}
    for u in gw.upstream:
        t = tokens.get(u.provider)
        issued, refused, failed, waits = (t.issued, t.refused, t.failed, t.lock_waits) if t else (0, 0, 0, 0)
        lines.append(
            f"{u.provider:<8}{millis(u.p50_s):>8}{millis(u.p99_s):>8}{rate(u.errors_per_s):>7}"
            f"{count(u.errors_total):>8}{count(issued):>8}{count(refused):>9}{count(failed):>8}{count(waits):>12}"
        )
    lines.extend(_rejection_lines(gw))
    return lines


def _rejection_lines(gw: GatewayView) -> list[str]:
    if not gw.rejections:
        return ["REJECTED  none by pacing"]
    lines = [f"{'REJECTED':<10}{'reason':<40}{'total':>8}{'interval':>10}"]
    ranked = sorted(gw.rejections, key=lambda r: (-(r.recent or 0.0), -r.total, r.provider, r.reason))
    for r in ranked[:MAX_REJECTION_ROWS]:
        recent = "-" if r.recent is None else f"+{count(r.recent)}"
        lines.append(f"{r.provider:<10}{r.reason[:39]:<40}{count(r.total):>8}{recent:>10}")
    if len(ranked) > MAX_REJECTION_ROWS:
        lines.append(f"  ... and {len(ranked) - MAX_REJECTION_ROWS} more reasons")
    return lines


def _worker_lines(workers: Iterable[WorkerView]) -> list[str]:
    header = (
        f"{'WORKER':<21}{'state':<6}{'done':>8}{'failed':>8}{'malformed':>11}{'tasks/s':>9}{'outputs':>9}"
    )
    lines = [header]
    for w in workers:
        if not w.up:
            lines.append(f"{w.name[:20]:<21}DOWN  {w.error}  ({masked(w.url)})")
            continue
        lines.append(
            f"{w.name[:20]:<21}{'up':<6}{count(w.done):>8}{count(w.failed):>8}{count(w.malformed):>11}"
            f"{rate(w.tasks_per_s):>9}{count(w.outputs):>9}"
        )
    return lines


def render(view: StatusView, width: int = WIDTH) -> list[str]:
    """The frame's lines, none longer than ``width``."""
    lines = [_title(view), *_gateway_lines(view.gateway)]
    if view.workers:
        lines.extend(_worker_lines(view.workers))
    return [clip(line, width) for line in lines]
